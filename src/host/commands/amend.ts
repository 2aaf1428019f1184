// `amend`: the trusted half, in qemu-img's order: the -o lists as they come (with --object),
// "Must specify options", help for an explicit -f, the file name count, the cache mode, the
// read-write open (O_DSYNC), help for the format found, then the guest's option checks and plan.
// A new data file name goes through the path policy first: instar never writes a name it would
// refuse to follow. The host fsyncs after the guest exits.
import { closeSync } from 'node:fs';
import type { Command, CommandContext } from './types.ts';
import type { ParsedCommand } from '../../cli/types.ts';
import { InputImageError, topTarget } from '../input-image.ts';
import { addObject, sourceSecrets } from '../secrets.ts';
import { namedSecrets } from './amend-secrets.ts';
import { usageError } from '../../cli/usage-error.ts';
import { isValidOptionList, optionItems } from './measure-options.ts';
import { openReferenced, startChain, PathRefusedError } from '../paths/resolve.ts';
import { ProgressRule, progressLine } from '../../output/progress.ts';
import { AMEND_OPTIONS, amendHelp } from '../../formats/amend-options.ts';
import { openForWriting, QEMU_FORMAT_NAMES } from './rebase.ts';
import { PROBED_RAW_WARNING, runOnImage } from '../writable-image.ts';
import type { AmendOptions, AmendResult } from '../../ops/amend.ts';
import { optionsInOrder } from '../../cli/argv-stop.ts';

const CACHE_MODES = new Set(['none', 'off', 'writeback', 'unsafe', 'directsync', 'writethrough']);

/** qemu's has_help_option: an item named "help" or "?" anywhere in the list. */
const hasHelp = (list: string): boolean => optionItems(list).some(([name]) => name === 'help' || name === '?');

/** print_amend_option_help for a format named by -f. */
function printHelp(format: string, ctx: CommandContext): number {
  if (!QEMU_FORMAT_NAMES.has(format)) {
    ctx.err(`${ctx.progname}: Unknown file format '${format}'\n`);
    return 1;
  }
  if (!AMEND_OPTIONS[format]) {
    ctx.err(`${ctx.progname}: Format driver '${format}' does not support option amendment\n`);
    return 1;
  }
  ctx.out(amendHelp(format));
  return 0;
}

/** The policy's refusal of a data file name the amend would write, or undefined. */
function dataFileRefusal(list: string, path: string, ctx: CommandContext): string | undefined {
  const name = optionItems(list).filter(([key]) => key === 'data_file').at(-1)?.[1];
  if (name === undefined || name === '') return undefined;
  try {
    closeSync(openReferenced(name, path, 'data-file', ctx.policy, startChain(path)).fd);
  } catch (e) {
    if (e instanceof PathRefusedError) return `instar refuses the data file name '${name}' (${e.reason}); nothing was written`;
  }
  return undefined;
}

function validAmendResult(raw: unknown): AmendResult {
  const r = (raw ?? {}) as Record<string, unknown>;
  // One value per L1 entry at most (4 Mi entries per table in qemu): bounded before printing.
  const percentages = (v: unknown) => Array.isArray(v) && v.length <= 1 << 24 && v.every((p) => typeof p === 'number' && p >= 0 && p <= 100);
  const lines = (v: unknown) => Array.isArray(v) && v.length > 0 && v.length <= 4 && v.every((l) => typeof l === 'string' && l.length < 4096);
  const ok = typeof r.format === 'string' && r.format.length <= 64 && (
    r.help === true || r.unsupported === true || (typeof r.refused === 'string' && r.refused.length < 1024) ||
    (r.done === true && percentages(r.progress) && (r.error === undefined || lines(r.error)) && (r.errorHint === undefined || (lines([r.errorHint]) && r.error !== undefined))) ||
    (r.done === undefined && lines(r.error)));
  if (!ok) throw new InputImageError('the guest gave a malformed amend result');
  return r as AmendResult;
}

async function runAmend(cmd: ParsedCommand, list: string, ctx: CommandContext, progress: (line: string) => void): Promise<number> {
  const target = topTarget(cmd, cmd.args[0]);
  const fd = openForWriting(cmd, target);
  const refusal = dataFileRefusal(list, target.path, ctx);
  const help = hasHelp(list);
  const options: AmendOptions = {
    format: target.format,
    unsafeQuirks: ctx.globals.unsafeQuirks,
    fileName: target.path,
    profile: ctx.profile,
    // qemu opens the image for I/O: an encrypted one needs its key.
    secrets: sourceSecrets(cmd.options.get('object') ?? [], [target]),
    amendSecrets: namedSecrets(list, cmd.options.get('object') ?? []),
    force: cmd.options.has('force'),
    optionList: list,
    help,
    // The policy's refusal stops the guest right after the open: nothing is written.
    stopAfterOpen: refusal !== undefined,
    newSizeRules: ctx.profile.major >= 8,
  };
  const result: AmendResult = validAmendResult(await runOnImage('amend', options, fd, target, ctx, true));
  if (target.format === undefined && result.format === 'raw') ctx.err(PROBED_RAW_WARNING(target.path));
  const report = (lines: string[], bareHint = ''): number => {
    ctx.err(`${ctx.progname}: ${lines[0]}\n${lines.slice(1).map((l) => `${l}\n`).join('')}${bareHint}`);
    return 1;
  };
  if (refusal !== undefined) return report([refusal]);
  if (help || 'help' in result) return printHelp(result.format, ctx);
  if ('unsupported' in result) return report([`Format driver '${result.format}' does not support option amendment`]);
  if ('error' in result && !('done' in result)) return report(result.error);
  // qemu's progress: 0% before the driver runs, what the driver reports, 100% after it.
  const rule = new ProgressRule();
  const show = (percent: number): void => {
    const value = rule.set(percent);
    if (value !== undefined) progress(progressLine(value));
  };
  show(0);
  if ('refused' in result) {
    show(100);
    return report([result.refused]);
  }
  for (const p of result.progress) show(p);
  show(100);
  return result.error ? report(result.error, result.errorHint) : 0;
}

export const amend: Command = async (cmd, ctx) => {
  let list: string | undefined;
  const objects: string[] = [];
  for (const [key, value] of optionsInOrder(cmd)) {
    if (key === 'object' && !addObject(objects, value, ctx.err, ctx.progname)) return 1;
    if (key !== 'options') continue;
    if (!isValidOptionList(value)) {
      ctx.err(`${ctx.progname}: Invalid option list: ${value}\n`);
      return 1;
    }
    list = list === undefined ? value : `${list},${value}`;
  }
  if (list === undefined) return usageError(ctx, cmd, 'Must specify options (-o)');
  const showProgress = cmd.options.has('progress') && !cmd.options.has('quiet');
  const progress = (line: string): void => {
    if (showProgress) ctx.out(line);
  };
  let status: number;
  const format = cmd.options.get('format')?.at(-1);
  if (format !== undefined && hasHelp(list)) status = printHelp(format, ctx);
  else if (cmd.args.length !== 1) {
    ctx.err(`${ctx.progname}: Expecting one image file name\n`);
    status = 1;
  } else {
    const cache = cmd.options.get('cache')?.at(-1);
    if (cache !== undefined && !CACHE_MODES.has(cache)) {
      ctx.err(`${ctx.progname}: Invalid cache option: ${cache}\n`);
      status = 1;
    } else {
      try {
        status = await runAmend(cmd, list, ctx, progress);
      } catch (e) {
        if (!(e instanceof InputImageError)) throw e;
        ctx.err(`${ctx.progname}: ${e.message}\n`);
        status = 1;
      }
    }
  }
  // qemu_progress_end: the progress line ends, whatever happened.
  progress('\n');
  return status;
};
