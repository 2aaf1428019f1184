// `map`: the trusted half. Parses qemu-img's options, opens the image read-only (files it names
// only through the path policy), lets a guest walk and merge the allocation status, and prints
// the entries as they stream in, naming each layer's file as qemu does.
import { closeSync } from 'node:fs';
import type { Command, CommandContext } from './types.ts';
import type { ParsedCommand } from '../../cli/types.ts';
import { OpError } from '../sandbox/run.ts';
import { runWithReferencedFiles, ReferencedFileError } from '../open-files.ts';
import { InputImageError, foreignOption, keyOptions, openTop, topTarget, type Target, referencedOpenMessage, guestFormat } from '../input-image.ts';
import { addObject, sourceSecrets } from '../secrets.ts';
import { usageError } from '../../cli/usage-error.ts';
import { parseMapSize } from './map-size.ts';
import { HUMAN_HEADER, humanMapLine, jsonMapEntry, type MapLine } from '../../output/map.ts';
import type { MapEntry } from '../../protocol/messages.ts';
import type { MapOptions, MapResult } from '../../ops/map.ts';
import { FLAG } from '../../ops/map-flags.ts';
import { printErrorLines } from './error-lines.ts';
import { optionsInOrder } from '../../cli/argv-stop.ts';

interface MapArgs {
  json: boolean;
  start: bigint;
  maxLength?: bigint;
}

/** Options checked in command-line order, as qemu's getopt loop does; a number is the exit status. */
function parseArgs(cmd: ParsedCommand, ctx: CommandContext): MapArgs | number {
  const isValid = (v: string) => v === 'human' || v === 'json';
  const args: MapArgs = { json: false, start: 0n };
  const fail = (message: string) => {
    printErrorLines(ctx, message);
    return 1;
  };
  const objects: string[] = [];
  for (const [key, value] of optionsInOrder(cmd)) {
    // qemu creates each --object as its option comes: a bad one stops map there.
    if (key === 'object' && !addObject(objects, value, ctx.err, ctx.progname)) return 1;
    if (key === 'output' && ctx.profile.newUsageErrors && !isValid(value)) return usageError(ctx, cmd, `--output expects 'human' or 'json' not '${value}'`);
    if (key !== 'start-offset' && key !== 'max-length') continue;
    const r = parseMapSize(key === 'start-offset' ? 'start offset' : 'max length', value, ctx.profile);
    if ('error' in r) return fail(r.error);
    if (r.warning) ctx.err(`${ctx.progname}: ${r.warning}\n`);
    if (key === 'start-offset') args.start = r.value;
    else args.maxLength = r.value;
  }
  if (cmd.args.length !== 1) return usageError(ctx, cmd, 'Expecting one image file name');
  const outputs = cmd.options.get('output') ?? [];
  if (outputs.length > 0 && !isValid(outputs[outputs.length - 1])) return fail('--output must be used with human or json as argument.');
  args.json = outputs.at(-1) === 'json';
  return args;
}

/** Prints entries as they arrive; JSON needs to know whether another follows, so one waits. */
class MapPrinter {
  private pending?: MapLine;
  started = false;
  count = 0;
  constructor(private ctx: CommandContext, private json: boolean, private names: string[]) {}

  start(): void {
    if (this.started) return;
    this.started = true;
    this.ctx.out(this.json ? '[' : HUMAN_HEADER);
  }

  /** Takes one chunk from the guest (untrusted: device indices are checked). */
  entries(chunk: MapEntry[]): void {
    this.start();
    for (const [start, length, depth, flags, offset, file] of chunk) {
      const line: MapLine = {
        start, length, depth,
        present: (flags & FLAG.present) !== 0,
        zero: (flags & FLAG.zero) !== 0,
        data: (flags & FLAG.data) !== 0,
        compressed: (flags & FLAG.compressed) !== 0,
      };
      // -1: no offset; a string: an int64 that is not a safe non-negative number (checked on arrival).
      if (offset !== -1) {
        line.offset = typeof offset === 'string' ? BigInt(offset) : offset;
        const name = this.names[file];
        if (name === undefined) throw new OpError('the guest named a file it was not given');
        line.filename = name;
      }
      this.add(line);
    }
  }

  add(line: MapLine): void {
    this.count++;
    if (!this.json) {
      if (line.data && line.offset === undefined) throw new InputImageError('File contains external, encrypted or compressed clusters.');
      this.ctx.out(humanMapLine(line));
      return;
    }
    if (this.pending) this.ctx.out(jsonMapEntry(this.pending, this.ctx.profile) + ',\n');
    this.pending = line;
  }

  /** A failure after some entries: qemu printed each finished one with its "," (another was coming). */
  abandon(): void {
    if (this.json && this.pending) this.ctx.out(jsonMapEntry(this.pending, this.ctx.profile) + ',\n');
    this.pending = undefined;
  }

  finish(): void {
    if (this.json && this.pending) this.ctx.out(jsonMapEntry(this.pending, this.ctx.profile) + ']\n');
  }
}

function referencedFailure(e: ReferencedFileError, target: Target): InputImageError {
  return new InputImageError(referencedOpenMessage(e, target));
}

async function runMap(cmd: ParsedCommand, args: MapArgs, ctx: CommandContext): Promise<void> {
  const target = topTarget(cmd, cmd.args[0], true);
  const fd = openTop(target);
  const names: string[] = [];
  const printer = new MapPrinter(ctx, args.json, names);
  let failure: unknown;
  const options: MapOptions = {
    // `-f file` maps the file itself, which reads as raw.
    format: guestFormat(target.format),
    unsafeQuirks: ctx.globals.unsafeQuirks,
    fileName: target.path,
    profile: ctx.profile,
    start: args.start.toString(),
    maxLength: args.maxLength?.toString(),
    human: !args.json,
    // Reading needs the key of an encrypted image (qemu opens map's image for I/O).
    secrets: sourceSecrets(cmd.options.get('object') ?? [], [target]),
    keyOptions: keyOptions([target]),
  };
  const onMapEntries = (chunk: MapEntry[]) => {
    // A rendering failure must not throw inside the message loop: keep the first and stop printing.
    if (failure !== undefined) return;
    try {
      printer.entries(chunk);
    } catch (e) {
      failure = e;
    }
  };
  let result: unknown;
  try {
    if (target.unknownFormatOption !== undefined || target.probedKeyOption !== undefined) {
      // qemu refuses the option when it opens the image, naming the format it found.
      const found = await runWithReferencedFiles('map', { ...options, formatOnly: true }, [{ fd, path: target.path }], ctx);
      const format = (found as MapResult | undefined)?.format;
      const foreign = typeof format === 'string' ? foreignOption(target, format) : target.unknownFormatOption ?? target.probedKeyOption;
      if (foreign !== undefined) throw new InputImageError(`Could not open '${target.errorName}': Block format '${typeof format === 'string' ? format : '?'}' does not support the option '${foreign}'`);
    }
    result = await runWithReferencedFiles('map', options as unknown as Record<string, unknown>, [{ fd, path: target.path }], { ...ctx, run: { ...ctx.run, onMapEntries } }, names);
  } catch (e) {
    if (failure !== undefined) throw failure;
    if (e instanceof ReferencedFileError) throw referencedFailure(e, target);
    if (e instanceof OpError) {
      if (printer.started) printer.abandon();
      throw new InputImageError(printer.started ? `Could not read file metadata: ${e.message}` : `Could not open '${target.errorName}': ${e.message}`);
    }
    throw e;
  } finally {
    closeSync(fd);
  }
  if (failure !== undefined) throw failure;
  // The header is out; qemu names the image as it was given (no reason: error_report).
  if ((result as MapResult | undefined)?.sizeFailed === true && printer.count === 0) {
    printer.start();
    throw new InputImageError(`Failed to get size for '${target.errorName}'`);
  }
  const entries = (result as MapResult | undefined)?.entries;
  if (typeof entries !== 'number' || entries !== printer.count) throw new InputImageError(`Could not read file metadata: the guest's map was incomplete`);
  printer.start();
  // An empty range: qemu prints its initial entry, all false with length 0.
  if (entries === 0) printer.add({ start: args.start, length: 0, depth: 0, present: false, zero: false, data: false, compressed: false });
  printer.finish();
}

export const map: Command = async (cmd, ctx) => {
  const args = parseArgs(cmd, ctx);
  if (typeof args === 'number') return args;
  // -U/--force-share and --object are accepted: instar opens read-only and needs no secret here.
  try {
    await runMap(cmd, args, ctx);
    return 0;
  } catch (e) {
    if (e instanceof InputImageError) {
      ctx.err(`${ctx.progname}: ${e.message}\n`);
      return 1;
    }
    throw e;
  }
};
