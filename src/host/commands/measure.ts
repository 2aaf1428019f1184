// `measure`: the trusted half. Checks the options in qemu-img's order (the getopt loop, the file
// name rules), lets a guest open the input (read-only, files it names only through the path policy)
// and walk its block status, then looks up -O, checks -o against that format's create options, and
// computes the sizes with the format's pure measure code. With --size no file is opened at all.
import { closeSync } from 'node:fs';
import type { Command, CommandContext } from './types.ts';
import type { ParsedCommand } from '../../cli/types.ts';
import { OpError } from '../sandbox/run.ts';
import { printWarnings, runWithReferencedFiles, ReferencedFileError } from '../open-files.ts';
import { MAX_WARNING_TEXT, MAX_WARNINGS } from '../../protocol/messages.ts';
import { InputImageError, foreignOptionMessage, keyOptions, openTop, topTarget, type Target, referencedOpenMessage, guestFormat } from '../input-image.ts';
import { parseSecretObjects, SecretError, sourceSecrets } from '../secrets.ts';
import { usageError } from '../../cli/usage-error.ts';
import { parseMapSize } from './map-size.ts';
import { parseSnapshotParam } from './image-opts.ts';
import { isValidOptionList, OptionListError, parseCreateOptions } from './measure-options.ts';
import { findMeasurer } from '../../formats/measurers.ts';
import { ImageError, type MeasureEnvironment, type MeasureInput, type MeasureResult } from '../../formats/types.ts';
import { humanMeasure, jsonMeasure } from '../../output/measure.ts';
import { strerrorNumber } from '../../strerror-number.ts';
import { CLUSTER_BITS, type MeasureOpResult, type MeasureOptions } from '../../ops/measure.ts';
import type { SnapshotChoice } from '../../ops/convert/sources.ts';
import { optionsInOrder } from '../../cli/argv-stop.ts';

interface MeasureArgs {
  json: boolean;
  /** -o lists joined with ',' (accumulate_options). */
  options?: string;
  size?: bigint;
  snapshot?: SnapshotChoice;
  filename?: string;
}

/** A failure already worded: lines after "<progname>: " unless marked otherwise; exit status 1. */
class MeasureFailure extends Error {
  constructor(readonly lines: { text: string; prefixed: boolean }[]) {
    super(lines[0]?.text ?? '');
  }
}
const failure = (...texts: string[]) => new MeasureFailure(texts.map((text) => ({ text, prefixed: true })));

/** -l, with qemu-img measure's words for a key it does not know. */
function snapshotParam(text: string): SnapshotChoice {
  const choice = parseSnapshotParam(text);
  if ('invalidKey' in choice) throw failure(`Invalid parameter '${choice.invalidKey}'`, `Failed in parsing snapshot param '${text}'`);
  return choice;
}

/** The getopt loop (each option checked as it comes), then the file name rules. A number is an exit status. */
function parseArgs(cmd: ParsedCommand, ctx: CommandContext): MeasureArgs | number {
  const isValid = (v: string) => v === 'human' || v === 'json';
  const args: MeasureArgs = { json: false };
  const objects: string[] = [];
  let snapshotOpts: SnapshotChoice | undefined;
  let snapshotName: string | undefined;
  for (const [key, value] of optionsInOrder(cmd)) {
    if (key === 'options') {
      if (!isValidOptionList(value)) throw failure(`Invalid option list: ${value}`);
      args.options = args.options === undefined ? value : `${args.options},${value}`;
    } else if (key === 'snapshot') {
      if (value.startsWith('snapshot.')) snapshotOpts = snapshotParam(value);
      else snapshotName = value;
    } else if (key === 'object') {
      // qemu creates each object as its option comes: a bad one stops the command there.
      objects.push(value);
      parseSecretObjects(objects);
    } else if (key === 'output') {
      if (!isValid(value)) {
        if (ctx.profile.newUsageErrors) return usageError(ctx, cmd, `--output expects 'human' or 'json' not '${value}'`);
        throw failure('--output must be used with human or json as argument.');
      }
      args.json = value === 'json';
    } else if (key === 'size') {
      const r = parseMapSize('image size', value, ctx.profile);
      if ('error' in r) throw failure(...r.error.split('\n'));
      if (r.warning) ctx.err(`${ctx.progname}: ${r.warning}\n`);
      args.size = r.value;
    }
  }
  if (cmd.args.length > 1) throw failure('At most one filename argument is allowed.');
  args.filename = cmd.args[0];
  args.snapshot = snapshotOpts ?? (snapshotName === undefined ? undefined : { idOrName: snapshotName });
  const needsFile = cmd.options.has('image-opts') || cmd.options.has('format') || args.snapshot !== undefined;
  if (args.filename === undefined && needsFile) throw failure('--image-opts, -f, and -l require a filename argument.');
  if (args.filename !== undefined && args.size !== undefined) throw failure('--size N cannot be used together with a filename.');
  if (args.filename === undefined && args.size === undefined) throw failure('Either --size N or one filename must be specified.');
  return args;
}

function referencedFailure(e: ReferencedFileError, target: Target): MeasureFailure {
  return failure(referencedOpenMessage(e, target));
}

const DECIMAL = /^(0|[1-9][0-9]{0,19})$/;

/** The guest's answer, checked before any of it is used. */
function validResult(raw: unknown): MeasureOpResult {
  const bad = () => new OpError('the guest answered measure in a malformed way');
  if (typeof raw !== 'object' || raw === null) throw bad();
  const r = raw as Record<string, unknown>;
  const clusterSizes = CLUSTER_BITS.max - CLUSTER_BITS.min + 1;
  if (typeof r.format !== 'string' || !Number.isSafeInteger(r.virtualSize) || (r.virtualSize as number) < 0) throw bad();
  if (!Array.isArray(r.dataBytes) || r.dataBytes.length !== clusterSizes || !r.dataBytes.every((d) => typeof d === 'string' && DECIMAL.test(d))) throw bad();
  if (r.sizeErrno !== undefined && !Number.isInteger(r.sizeErrno)) throw bad();
  if (r.blockStatusError !== undefined && (typeof r.blockStatusError !== 'string' || r.blockStatusError.length > 256)) throw bad();
  if (r.snapshotError !== undefined && (typeof r.snapshotError !== 'string' || r.snapshotError.length > 4096)) throw bad();
  if (r.statusWarnings !== undefined) {
    if (!Array.isArray(r.statusWarnings) || r.statusWarnings.length > MAX_WARNINGS) throw bad();
    for (const w of r.statusWarnings as unknown[]) {
      const { text, prefixed } = (w ?? {}) as Record<string, unknown>;
      if (typeof text !== 'string' || text.length > MAX_WARNING_TEXT || typeof prefixed !== 'boolean') throw bad();
    }
  }
  if (r.bitmaps !== undefined) {
    if (!Array.isArray(r.bitmaps) || r.bitmaps.length > 65535) throw bad();
    for (const b of r.bitmaps as unknown[]) {
      const { nameBytes, granularity } = (b ?? {}) as Record<string, unknown>;
      if (!Number.isInteger(nameBytes) || (nameBytes as number) < 0 || (nameBytes as number) > 65535) throw bad();
      if (!Number.isInteger(granularity) || (granularity as number) < 512 || (granularity as number) > 2 ** 31) throw bad();
    }
  }
  // A cluster is counted only where the disk is: more data than the rounded-up disk is a lie.
  const size = BigInt(r.virtualSize as number);
  (r.dataBytes as string[]).forEach((d, i) => {
    const cs = 2n ** BigInt(CLUSTER_BITS.min + i);
    if (BigInt(d) > ((size + cs - 1n) / cs) * cs || BigInt(d) % cs !== 0n) throw bad();
  });
  return r as unknown as MeasureOpResult;
}

/** Opens and walks the input in a guest; qemu's errors for what cannot be opened. */
async function measureInput(cmd: ParsedCommand, args: MeasureArgs, ctx: CommandContext): Promise<MeasureInput> {
  const target = topTarget(cmd, args.filename!, true);
  let fd: number;
  try {
    fd = openTop(target);
  } catch (e) {
    if (e instanceof InputImageError) throw failure(e.message);
    throw e;
  }
  const options: MeasureOptions = {
    format: guestFormat(target.format),
    unsafeQuirks: ctx.globals.unsafeQuirks,
    fileName: target.path,
    profile: ctx.profile,
    snapshot: args.snapshot,
    // qemu opens measure's input for I/O: an encrypted one needs its key.
    secrets: sourceSecrets(cmd.options.get('object') ?? [], [target]),
    keyOptions: keyOptions([target]),
  };
  let raw: unknown;
  try {
    raw = await runWithReferencedFiles('measure', options as unknown as Record<string, unknown>, [{ fd, path: target.path }], ctx);
  } catch (e) {
    if (e instanceof ReferencedFileError) throw referencedFailure(e, target);
    if (e instanceof OpError) throw failure(`Could not open '${target.errorName}': ${e.message}`);
    throw e;
  } finally {
    closeSync(fd);
  }
  const r = validResult(raw);
  const foreign = foreignOptionMessage(target, r.format);
  if (foreign !== undefined) throw failure(foreign);
  if (r.snapshotError !== undefined) throw failure(r.snapshotError);
  return {
    virtualSize: BigInt(r.virtualSize),
    sizeError: r.sizeErrno === undefined ? undefined : strerrorNumber(r.sizeErrno),
    dataBytes: (clusterSize) => {
      // What qemu's walk printed on the way, printed only by a measure that walks.
      printWarnings(r.statusWarnings ?? [], ctx);
      if (r.blockStatusError !== undefined) throw new ImageError(`Unable to get block status: ${r.blockStatusError}`);
      return BigInt(r.dataBytes[Math.log2(clusterSize) - CLUSTER_BITS.min] ?? '0');
    },
    bitmaps: r.bitmaps,
  };
}

/** -O's driver, -o checked against its create options, --size, then its measure. */
function measureFor(cmd: ParsedCommand, args: MeasureArgs, ctx: CommandContext, input: MeasureInput | undefined): MeasureResult {
  const format = cmd.options.get('target-format')?.at(-1) ?? 'raw';
  const env: MeasureEnvironment = {
    qemu: { major: ctx.profile.major, minor: ctx.profile.minor },
    // The objects were all checked in the getopt loop.
    secretIds: new Set(parseSecretObjects(cmd.options.get('object') ?? []).keys()),
  };
  const found = findMeasurer(format, env);
  if ('error' in found) {
    if (found.error === 'unknown') throw failure(`Unknown file format '${format}'`);
    throw failure(`Format driver '${format}' does not support image creation`);
  }
  let options: Map<string, string>;
  try {
    options = parseCreateOptions(args.options, found.createOptions, ctx.profile.newUsageErrors);
  } catch (e) {
    if (!(e instanceof OptionListError)) throw e;
    throw new MeasureFailure([...e.lines, { text: `Invalid options for file format '${format}'`, prefixed: true }]);
  }
  if (args.size !== undefined) {
    options.delete('size');
    options.set('size', args.size.toString());
  }
  if (!found.measurer) throw failure(`Block driver '${format}' does not support size measurement`);
  try {
    return found.measurer.measure(options, input, env);
  } catch (e) {
    if (e instanceof ImageError) throw failure(e.message);
    throw e;
  }
}

export const measure: Command = async (cmd, ctx) => {
  try {
    const args = parseArgs(cmd, ctx);
    if (typeof args === 'number') return args;
    const input = args.filename === undefined ? undefined : await measureInput(cmd, args, ctx);
    const result = measureFor(cmd, args, ctx, input);
    ctx.out(args.json ? jsonMeasure(result) : humanMeasure(result));
    return 0;
  } catch (e) {
    if (e instanceof MeasureFailure) {
      for (const line of e.lines) ctx.err(line.prefixed ? `${ctx.progname}: ${line.text}\n` : `${line.text}\n`);
      return 1;
    }
    if (e instanceof SecretError || e instanceof InputImageError) {
      ctx.err(`${ctx.progname}: ${e.message}\n`);
      return 1;
    }
    throw e;
  }
};
