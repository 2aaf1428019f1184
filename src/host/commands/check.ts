// `check`: the trusted half. Parses qemu-img's options in its order, opens the image read-only
// (files it names only through the path policy), lets a guest run the format's checker, checks the
// guest's report and prints it as qemu-img does. With -r the image alone is opened read-write
// (O_DSYNC: each of the guest's repair writes is durable before the next) and fsynced afterwards.
import type { Command, CommandContext } from './types.ts';
import type { ParsedCommand } from '../../cli/types.ts';
import { InputImageError, foreignOptionMessage, keyOptions, openTop, topTarget, guestFormat } from '../input-image.ts';
import { openWritable, PROBED_RAW_WARNING, runOnImage } from '../writable-image.ts';
import { addObject, sourceSecrets } from '../secrets.ts';
import { usageError } from '../../cli/usage-error.ts';
import { humanCheck, jsonCheck, writeCheckLines } from '../../output/image-check.ts';
import { validCheckResult } from './check-result.ts';
import type { CheckOptions } from '../../ops/check.ts';
import type { RepairMode } from '../../formats/check-types.ts';
import { optionsInOrder } from '../../cli/argv-stop.ts';

const CACHE_MODES = new Set(['none', 'off', 'writeback', 'unsafe', 'directsync', 'writethrough']);
/** qemu-img check's exit statuses. */
const STATUS = { ok: 0, failed: 1, corrupt: 2, leaks: 3, unsupported: 63 } as const;

interface CheckArgs {
  json: boolean;
  quiet: boolean;
  repair?: RepairMode;
}

/** Options in qemu's order: the getopt loop, the file name count, --output (7.2), -T. */
function parseArgs(cmd: ParsedCommand, ctx: CommandContext): CheckArgs | number {
  const isValid = (v: string) => v === 'human' || v === 'json';
  let repair: RepairMode | undefined;
  const objects: string[] = [];
  for (const [key, value] of optionsInOrder(cmd)) {
    if (key === 'object') {
      if (!addObject(objects, value, ctx.err, ctx.progname)) return STATUS.failed;
    }
    if (key === 'output' && ctx.profile.newUsageErrors && !isValid(value)) return usageError(ctx, cmd, `--output expects 'human' or 'json' not '${value}'`);
    if (key !== 'repair') continue;
    if (value !== 'leaks' && value !== 'all') {
      return usageError(ctx, cmd, ctx.profile.newUsageErrors
        ? `--repair (-r) expects 'leaks' or 'all' not '${value}'`
        : `Unknown option value for -r (expecting 'leaks' or 'all'): ${value}`);
    }
    repair = value;
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

async function runCheck(cmd: ParsedCommand, args: CheckArgs, ctx: CommandContext): Promise<number> {
  // A probed format's key secret only where nothing is written (-r opens the image writable).
  const target = topTarget(cmd, cmd.args[0], !args.repair);
  const fd = args.repair ? openWritable(cmd, target) : openTop(target);
  const options: CheckOptions = {
    format: guestFormat(target.format),
    unsafeQuirks: ctx.globals.unsafeQuirks,
    fileName: target.path,
    profile: ctx.profile,
    // qemu opens the image for I/O: an encrypted one needs its key.
    secrets: sourceSecrets(cmd.options.get('object') ?? [], [target]),
    keyOptions: keyOptions([target]),
    repair: args.repair,
  };
  const result = validCheckResult(await runOnImage('check', options, fd, target, ctx, !!args.repair));
  if (args.repair && target.format === undefined && result.format === 'raw') ctx.err(PROBED_RAW_WARNING(target.path));
  const foreign = foreignOptionMessage(target, result.format);
  if (foreign !== undefined) throw new InputImageError(foreign);
  if ('refused' in result) {
    ctx.err(`${ctx.progname}: ${result.refused}\n`);
    return STATUS.failed;
  }
  if (!('report' in result)) {
    ctx.err(`${ctx.progname}: This image format does not support checks\n`);
    return STATUS.unsupported;
  }
  const r = result.report;
  const fixed = r['corruptions-fixed'] || r['leaks-fixed'];
  // The first (repairing) check's lines, then the second check's, as qemu prints them.
  for (const pass of [result.repair, r]) {
    if (!pass) continue;
    writeCheckLines(pass.lines, ctx.err, ctx.progname);
    if (pass.omitted > 0) ctx.err(`${ctx.progname}: instar left out ${pass.omitted} further lines of this check\n`);
  }
  if (r.failure !== undefined) {
    // qemu printed the repair summary before its second check failed.
    if (fixed && !args.json && !args.quiet) ctx.out(humanCheck(r).split('Double checking the fixed image now...\n')[0] + 'Double checking the fixed image now...\n');
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
