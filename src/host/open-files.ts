// The host's side of `need-files`: an op that finds its image names files (backing chain, data
// file, extents) answers with their names; the host checks each name against the path policy,
// opens the allowed ones read-only and runs the op again with them. Every name is guest data.
import { closeSync } from 'node:fs';
import { runOp, OpError, type HostDevice } from './sandbox/run.ts';
import { openReferenced, startChain } from './paths/resolve.ts';
import { PathRefusedError, ReferenceOpenError, type ChainState } from './paths/policy.ts';
import { referencedPath } from './paths/combine.ts';
import { lockFailure } from './paths/messages.ts';
import type { CommandContext } from './commands/types.ts';
import { MAX_DATA_RUNS, type GuestWarning, type NeededFile } from '../protocol/messages.ts';
import { fileDataRunsUpTo } from './data-runs.ts';
import { isRawFormat, LockConflict, lockDefaults, lockImage, readUse } from './image-locks.ts';

/**
 * Lines already printed, per command (keyed by its stderr writer, which every copy of the context
 * shares): a command that runs several ops over the same image (convert's phases) prints each
 * once, as qemu, which opens the image once.
 */
const printed = new WeakMap<CommandContext['err'], Set<string>>();

/** Prints a guest's warnings as qemu prints them: error_report-style lines after the program name. */
export function printWarnings(warnings: readonly GuestWarning[], ctx: CommandContext): void {
  let seen = printed.get(ctx.err);
  if (!seen) printed.set(ctx.err, (seen = new Set()));
  for (const w of warnings) {
    const line = (w.prefixed ? `${ctx.progname}: ${w.text}` : w.text) + (w.unterminated ? '' : '\n');
    const key = `${w.source ?? ''}:${line}`;
    if (seen.has(key)) continue;
    seen.add(key);
    ctx.err(line);
  }
}

/** An image the user named on the command line, already opened by the command. */
export interface InputFile {
  fd: number;
  /** The name as the user gave it: relative names of the files it names resolve against it. */
  path: string;
  writable?: boolean;
  /** 'output' for a target the host created (convert); 'input' when absent. */
  role?: 'input' | 'output';
}

/** A referenced file the policy refused or that could not be opened; `message` is for the user. */
export class ReferencedFileError extends Error {
  /**
   * `root`: the input whose chain names the file; `referrerDepth`: how many backing links below
   * that input the image naming it is (qemu says "Could not open backing file: " once per link).
   */
  constructor(message: string, readonly file: NeededFile, readonly path: string, override readonly cause?: Error, readonly root = file.referrer, readonly referrerDepth = 0) {
    super(message);
    this.name = 'ReferencedFileError';
  }
}

/** qemu's nesting before the failure: one "Could not open backing file: " per backing link to the image that names the file. */
export function nestedReason(e: ReferencedFileError, reason = e.message): string {
  return 'Could not open backing file: '.repeat(e.referrerDepth) + reason;
}

/** Ops whose output depends on where files have holes (qemu's block status asks SEEK_DATA). */
const BLOCK_STATUS_OPS = new Set(['map', 'compare', 'convert', 'convert-image', 'convert-into', 'measure']);

/** Adds the host's data runs to read-only devices, within one request's budget. */
class DataRunHints {
  private budget = MAX_DATA_RUNS;
  add(devices: HostDevice[]): void {
    const asking = devices.filter((d) => !d.writable);
    asking.forEach((d, i) => {
      // An even share of what is left, so that a second file (compare) is not left with nothing.
      const share = Math.floor(this.budget / (asking.length - i));
      const answer = fileDataRunsUpTo(d.fd, share);
      if (!answer) return;
      d.dataRuns = answer.runs;
      if (answer.end !== undefined) d.dataRunsEnd = answer.end;
      if (answer.spans !== undefined) d.dataSpans = answer.spans;
      this.budget -= answer.runs.length + (answer.spans?.length ?? 0);
    });
  }
}

/** Most rounds of need-files: a chain of 16 backing files plus a few rounds of extents. */
const MAX_ROUNDS = 24;
/** Most files one op may have opened for it. */
const MAX_FILES = 4096;
const ROLES = new Set(['backing', 'data-file', 'extent']);

function neededFiles(result: unknown, deviceCount: number): NeededFile[] | undefined {
  if (typeof result !== 'object' || result === null || !('need-files' in result)) return undefined;
  const files = (result as Record<string, unknown>)['need-files'];
  if (!Array.isArray(files) || files.length === 0 || files.length > MAX_FILES) throw new OpError('the guest asked for files in a malformed answer');
  return files.map((f: unknown) => {
    const { role, name, referrer, format } = (f ?? {}) as Record<string, unknown>;
    const ok = typeof role === 'string' && ROLES.has(role) && typeof name === 'string' && Number.isInteger(referrer) &&
      (referrer as number) >= 0 && (referrer as number) < deviceCount && (format === undefined || typeof format === 'string');
    if (!ok) throw new OpError('the guest asked for files in a malformed answer');
    return { role, name, referrer, format } as NeededFile;
  });
}

/** What a caller may add to the shared loop. */
export interface ReferencedFileHooks {
  /** Called for each file granted (open until the call returns): e.g. info's file facts. */
  onOpened?: (file: NeededFile, fd: number, path: string) => void;
  /** Roles the op may ask for; a request for another is a malformed answer. All when absent. */
  roles?: ReadonlySet<NeededFile['role']>;
  /** The chain the (single) input belongs to, when the caller already walks one (info --backing-chain). */
  chain?: ChainState;
  /**
   * A file the op must write (commit's base): returns a writable fd the caller opened for it
   * after the policy let `fd` open (the caller checks it is the same file, fsyncs and closes it).
   */
  writable?: (file: NeededFile, fd: number, path: string, index: number) => number | undefined;
}

/**
 * Runs `op` over the inputs, granting the files it names as the policy allows, until it returns
 * its real result. Inputs come first in the device table, in order, with role 'input'.
 */
export async function runWithReferencedFiles(op: string, options: Record<string, unknown>, inputs: InputFile[], ctx: CommandContext, paths: string[] = [], hooks: ReferencedFileHooks = {}): Promise<unknown> {
  const devices: HostDevice[] = inputs.map((i) => ({ fd: i.fd, role: i.role ?? 'input', writable: !!i.writable }));
  const hints = BLOCK_STATUS_OPS.has(op) ? new DataRunHints() : undefined;
  hints?.add(devices);
  // `paths` (the caller's, when given) names every device in table order, as qemu spells it.
  paths.push(...inputs.map((i) => i.path));
  // One chain (loop detection, depth) per input; a referenced file belongs to its referrer's chain.
  const chains: ChainState[] = inputs.map((i, n) => (n === 0 && hooks.chain ? hooks.chain : startChain(i.path, i.fd)));
  const chainOf: number[] = inputs.map((_, i) => i);
  // Backing links from the chain's input to each device (its data files and extents are at its own depth).
  const depthOf: number[] = inputs.map(() => 0);
  const opened: number[] = [];
  try {
    for (let round = 0; round < MAX_ROUNDS; round++) {
      // Only the last round's warnings are printed: a need-files round opens the same images again.
      let warnings: GuestWarning[] = [];
      let result: unknown;
      try {
        result = await runOp(op, options, devices, { ...ctx.run, onWarnings: (w) => (warnings = w) });
      } catch (e) {
        if (e instanceof OpError) {
          // Before the error itself, as qemu prints them; the caller prints the error.
          printWarnings(e.warnings, ctx);
          e.warnings = [];
        }
        throw e;
      }
      const needed = neededFiles(result, devices.length);
      if (needed === undefined) {
        printWarnings(warnings, ctx);
        return result;
      }
      let added = 0;
      for (const file of needed) {
        if (hooks.roles && !hooks.roles.has(file.role)) throw new OpError('the guest asked for files in a malformed answer');
        if (devices.some((d) => d.referrer === file.referrer && d.role === file.role && d.name === file.name)) continue;
        if (devices.length >= MAX_FILES) throw new OpError('the image names too many files');
        const referrer = paths[file.referrer];
        const chain = chains[chainOf[file.referrer]];
        let fd: number;
        let path: string;
        try {
          ({ fd, path } = openReferenced(file.name, referrer, file.role, ctx.policy, chain));
        } catch (e) {
          if (e instanceof PathRefusedError || e instanceof ReferenceOpenError) {
            throw new ReferencedFileError(e.message, file, referencedPath(referrer, file.name, file.role), e, chainOf[file.referrer], depthOf[file.referrer]);
          }
          throw e;
        }
        opened.push(fd);
        // Before the lock: a hook that refuses this file (convert's own fresh target, which holds
        // its locks already) is to win over the lock conflict the target would be.
        hooks.onOpened?.(file, fd, path);
        try {
          // qemu locks every file of the chain as it opens it (image-locks.ts): backing files, data
          // files, extents. A data file or flat extent is its format's data child; what a written
          // image names beside it (not its backing file) is written too.
          const dataChild = file.role === 'data-file' || (file.role === 'extent' && isRawFormat(file.format));
          const use = file.role !== 'backing' && devices[file.referrer].writable ? 'write' : readUse();
          lockImage(fd, use, lockDefaults.forceShare, path, !dataChild && isRawFormat(file.format), dataChild);
        } catch (e) {
          if (e instanceof LockConflict) {
            const failure = lockFailure(file.role, e.message);
            throw new ReferencedFileError(failure.message, file, path, failure, chainOf[file.referrer], depthOf[file.referrer]);
          }
          throw e;
        }
        // `index`: the device's place in the table, which the files it names give as their referrer.
        const writableFd = hooks.writable?.(file, fd, path, devices.length);
        devices.push({ fd: writableFd ?? fd, role: file.role, writable: writableFd !== undefined, name: file.name, referrer: file.referrer });
        hints?.add(devices.slice(-1));
        paths.push(path);
        chainOf.push(chainOf[file.referrer]);
        depthOf.push(depthOf[file.referrer] + (file.role === 'backing' ? 1 : 0));
        added++;
      }
      if (added === 0) throw new OpError('the guest asked again for files it was given');
    }
    throw new OpError('the image keeps naming more files');
  } finally {
    for (const fd of opened) closeSync(fd);
  }
}
