// `check`: the trusted half. Parses qemu-img's options in its order, opens the image read-only
// (files it names only through the path policy), lets a guest run the format's checker, checks the
// guest's report and prints it as qemu-img does. Repair (-r) is not implemented.
import { closeSync } from 'node:fs';
import type { Command, CommandContext } from './types.ts';
import type { ParsedCommand } from '../../cli/types.ts';
import { OpError } from '../sandbox/run.ts';
import { runWithReferencedFiles, ReferencedFileError } from '../open-files.ts';
import { InputImageError, openTop, topTarget, type Target } from '../input-image.ts';
import { parseSecretObjects, SecretError, sourceSecrets } from '../secrets.ts';
import { usageError } from '../../cli/usage-error.ts';
import { humanCheck, jsonCheck, writeCheckLines } from '../../output/image-check.ts';
import { validCheckResult } from './check-result.ts';
import type { CheckOptions } from '../../ops/check.ts';

const CACHE_MODES = new Set(['none', 'off', 'writeback', 'unsafe', 'directsync', 'writethrough']);
/** qemu-img check's exit statuses. */
const STATUS = { ok: 0, failed: 1, corrupt: 2, leaks: 3, unsupported: 63 } as const;

interface CheckArgs {
  json: boolean;
  quiet: boolean;
  repair: boolean;
}

/** Options in qemu's order: the getopt loop, the file name count, --output (7.2), -T. */
function parseArgs(cmd: ParsedCommand, ctx: CommandContext): CheckArgs | number {
  const isValid = (v: string) => v === 'human' || v === 'json';
  let repair = false;
  const objects: string[] = [];
  for (const [key, value] of cmd.sequence ?? []) {
    if (key === 'object') {
      // qemu creates each --object as its option comes (a bad one stops the command there).
      objects.push(value);
      try {
        parseSecretObjects(objects);
      } catch (e) {
        if (!(e instanceof SecretError)) throw e;
        ctx.err(`${ctx.progname}: ${e.message}\n`);
        return STATUS.failed;
      }
    }
    if (key === 'output' && ctx.profile.newUsageErrors && !isValid(value)) return usageError(ctx, cmd, `--output expects 'human' or 'json' not '${value}'`);
    if (key !== 'repair') continue;
    if (value !== 'leaks' && value !== 'all') {
      return usageError(ctx, cmd, ctx.profile.newUsageErrors
        ? `--repair (-r) expects 'leaks' or 'all' not '${value}'`
        : `Unknown option value for -r (expecting 'leaks' or 'all'): ${value}`);
    }
    repair = true;
  }
  if (cmd.args.length !== 1) return usageError(ctx, cmd, 'Expecting one image file name');
  const outputs = cmd.options.get('output') ?? [];
  if (outputs.length > 0 && !isValid(outputs[outputs.length - 1])) {
    ctx.err(`${ctx.progname}: --output must be used with human or json as argument.\n`);
    return STATUS.failed;
  }
  const cache = cmd.options.get('cache')?.at(-1);
  if (cache !== undefined && !CACHE_MODES.has(cache)) {
    ctx.err(`${ctx.progname}: Invalid source cache option: ${cache}\n`);
    return STATUS.failed;
  }
  return { json: outputs.at(-1) === 'json', quiet: cmd.options.has('quiet'), repair };
}

/** qemu's wording for a file the image names that could not be opened. */
function referencedFailure(e: ReferencedFileError, target: Target): InputImageError {
  const reason = (e.cause as { reason?: string } | undefined)?.reason ?? e.message;
  if (e.file.role === 'backing') return new InputImageError(`Could not open '${target.errorName}': Could not open backing file: ${reason}`);
  return new InputImageError(`Could not open '${target.errorName}': ${reason}`);
}

async function runCheck(cmd: ParsedCommand, args: CheckArgs, ctx: CommandContext): Promise<number> {
  const target = topTarget(cmd, cmd.args[0]);
  const fd = openTop(target);
  const options: CheckOptions = {
    format: target.format === 'file' ? 'raw' : target.format,
    unsafeQuirks: ctx.globals.unsafeQuirks,
    fileName: target.path,
    profile: ctx.profile,
    // qemu opens the image for I/O: an encrypted one needs its key.
    secrets: sourceSecrets(cmd.options.get('object') ?? [], [target]),
  };
  let raw: unknown;
  try {
    raw = await runWithReferencedFiles('check', options as unknown as Record<string, unknown>, [{ fd, path: target.path }], ctx);
  } catch (e) {
    if (e instanceof ReferencedFileError) throw referencedFailure(e, target);
    if (e instanceof OpError) throw new InputImageError(`Could not open '${target.errorName}': ${e.message}`);
    throw e;
  } finally {
    closeSync(fd);
  }
  const result = validCheckResult(raw);
  if (target.unknownFormatOption !== undefined) {
    throw new InputImageError(`Could not open '${target.errorName}': Block format '${result.format}' does not support the option '${target.unknownFormatOption}'`);
  }
  if (!('report' in result)) {
    ctx.err(`${ctx.progname}: This image format does not support checks\n`);
    return STATUS.unsupported;
  }
  const r = result.report;
  writeCheckLines(r.lines, ctx.err, ctx.progname);
  if (r.omitted > 0) ctx.err(`${ctx.progname}: instar left out ${r.omitted} further lines of this check\n`);
  if (r.failure !== undefined) {
    ctx.err(`${ctx.progname}: Check failed: ${r.failure}\n`);
    return STATUS.failed;
  }
  if (!args.quiet) ctx.out(args.json ? jsonCheck(cmd.args[0], result.format, r) : humanCheck(r));
  if (r['check-errors']) {
    ctx.err(`${ctx.progname}: Check failed\n`);
    return STATUS.failed;
  }
  return r.corruptions ? STATUS.corrupt : r.leaks ? STATUS.leaks : STATUS.ok;
}

export const check: Command = async (cmd, ctx) => {
  const args = parseArgs(cmd, ctx);
  if (typeof args === 'number') return args;
  if (args.repair) {
    ctx.err(`${ctx.progname}: 'check -r' (repair) is not implemented yet in instar\n`);
    return STATUS.failed;
  }
  // -U, a valid -T and --object change nothing for a read-only check (secrets are read above).
  try {
    return await runCheck(cmd, args, ctx);
  } catch (e) {
    if (e instanceof InputImageError) {
      ctx.err(`${ctx.progname}: ${e.message}\n`);
      return STATUS.failed;
    }
    throw e;
  }
};
