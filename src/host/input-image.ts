// Opening an image the user named on the command line, shared by info, map, compare and convert:
// the file name or --image-opts option string, the -f format check, the read-only open, and
// qemu's wording for every failure ("Could not open 'X': …").
import { strerror } from '../strerror.ts';
import { closeSync, constants, fstatSync, openSync } from 'node:fs';
import { isRawFormat, LockConflict, lockDefaults, lockOrClose, readUse, type LockUse } from './image-locks.ts';
import type { ParsedCommand } from '../cli/types.ts';
import { nestedReason, type ReferencedFileError } from './open-files.ts';
import { isDriverName, leftoverOption } from '../formats/names.ts';
import { parseQemuOpts } from './commands/image-opts.ts';
import { quoteJsonString } from '../output/json.ts';
import { qdictOrder } from '../output/qdict-order.ts';

/** A failure worded as qemu-img words it; printed as "<progname>: <message>", exit status 1. */
export class InputImageError extends Error {}

/**
 * The format the guest opens a target as: `file` (qemu's file protocol named as a format, -f file)
 * is the file itself there, which is the raw driver; the host keeps 'file' for its own checks.
 */
export const guestFormat = (format: string | undefined): string | undefined => (format === 'file' ? 'raw' : format);

/** One image to open: where it is, how messages name it, and the format to read it as. */
export interface Target {
  path: string;
  /** The name in "Could not open 'X': …" (the whole option string for --image-opts). */
  errorName: string;
  format?: string;
  /** An --image-opts option the format does not have; qemu names the (probed) format in the error. */
  unknownFormatOption?: string;
  /** The id of the --object secret that unlocks the image (encrypt.key-secret for qcow2, key-secret for luks). */
  keySecret?: string;
  /** The name qemu gives an image opened with a key-secret option: "json:{…}" of its options. */
  jsonName?: string;
  /**
   * Without driver=: the key option given (key-secret, encrypt.key-secret), which qemu hands to
   * the probed format; the format found decides whether it has it (foreignOption).
   */
  probedKeyOption?: string;
  /** --image-opts force-share=on (qemu's -U for this image) and file.locking=off (no lock bytes at all). */
  forceShare?: boolean;
  noLocking?: boolean;
}

/** Options of --image-opts that change nothing for a read-only open (qemu keeps the plain name). */
const HARMLESS_IMAGE_OPTS = new Set(['read-only', 'auto-read-only', 'force-share', 'node-name', 'detect-zeroes', 'discard',
  'cache.direct', 'cache.no-flush', 'file.node-name', 'file.locking', 'file.aio', 'file.cache.direct', 'file.cache.no-flush']);

/**
 * Real qemu options instar does not implement (qemu would show a "json:{...}" name or use a
 * secret); refused with instar's own words rather than qemu's "does not support".
 */
const UNSUPPORTED_IMAGE_OPTS = /^(encrypt\.|backing|data-file|lazy-refcounts|pass-discard-|overlap-check|(l2-|refcount-)?cache-|discard-no-unref)/;

/** An image named on the command line: a file name, or (imageOpts) an option string naming a file. */
export function imageTarget(spec: string, format: string | undefined, imageOpts: boolean, probedKeys = false): Target {
  if (!imageOpts) return { path: spec, errorName: spec, format };
  if (format !== undefined) throw new InputImageError('--image-opts and --format are mutually exclusive');
  const opts = parseQemuOpts(spec, 'file');
  const fail = (why: string) => new InputImageError(`Could not open '${spec}': ${why}`);
  const reference = opts.get('file');
  if (reference !== undefined) throw fail(`Cannot find device='${reference}' nor node-name='${reference}'`);
  const driver = opts.get('driver');
  const fileDriver = opts.get('file.driver');
  if (fileDriver !== undefined && fileDriver !== 'file') throw fail(`instar opens image files only through the 'file' driver, not '${fileDriver}'`);
  // With driver=file the options are the protocol's own; otherwise the protocol's sit under "file.".
  const protocolKey = (key: string) => (driver === 'file' ? key : key.startsWith('file.') ? key.slice(5) : undefined);
  let unknownFormatOption: string | undefined;
  let keySecret: string | undefined;
  let probedKeyOption: string | undefined;
  for (const key of opts.keys()) {
    if (key === 'driver' || HARMLESS_IMAGE_OPTS.has(key)) continue;
    // Read-only commands only (probedKeys): the secret goes to the guest before the format is known.
    if (probedKeys && driver === undefined && probedKeyOption === undefined && (key === 'key-secret' || key === 'encrypt.key-secret')) {
      keySecret = opts.get(key);
      probedKeyOption = key;
      continue;
    }
    if ((key === 'encrypt.key-secret' && (driver === 'qcow2' || driver === 'qcow')) || (key === 'key-secret' && driver === 'luks')) {
      keySecret = opts.get(key);
      continue;
    }
    const own = protocolKey(key);
    if (own === 'filename' || own === 'driver' || HARMLESS_IMAGE_OPTS.has(`file.${own}`)) continue;
    if (UNSUPPORTED_IMAGE_OPTS.test(key)) throw fail(`instar does not support the --image-opts option '${key}'`);
    if (own !== undefined) throw fail(`Block protocol 'file' doesn't support the option '${own}'`);
    unknownFormatOption ??= key;
  }
  const path = opts.get(driver === 'file' ? 'filename' : 'file.filename');
  if (path === undefined) throw fail(driver === 'file' ? "The 'file' block driver requires a file name" : 'A block device must be specified for "file"');
  // A key-secret is an option qemu keeps in the node's name: it prints "json:{…}" (QDict order).
  const plain = [...opts.keys()].every((k) => ['driver', 'file.filename', 'encrypt.key-secret', 'key-secret'].includes(k));
  const jsonName = keySecret !== undefined && plain ? keyedName(driver, path, keySecret, probedKeyOption) : undefined;
  const on = (key: string) => ['on', 'yes', 'true'].includes(opts.get(key) ?? '');
  const locking = opts.get(driver === 'file' ? 'locking' : 'file.locking');
  return { path, errorName: spec, format: driver, unknownFormatOption, keySecret, jsonName, probedKeyOption, forceShare: on('force-share'), noLocking: locking !== undefined && ['off', 'no', 'false'].includes(locking) };
}

/** qemu's "json:{…}" name of a file opened with only a driver and a key secret (the driver probed: "?"). */
function keyedName(driver: string | undefined, path: string, keySecret: string, option = driver === 'luks' ? 'key-secret' : 'encrypt.key-secret'): string {
  return `json:${compactJson({ driver: driver ?? '?', file: { driver: 'file', filename: path }, [option]: keySecret })}`;
}

/** The image's name once its format is known (a probed driver is part of qemu's json:{…} name). */
export function nameWithFormat(target: Target, format: string): string | undefined {
  return target.jsonName?.replace('"driver": "?"', `"driver": ${quoteJsonString(format)}`);
}

/** The probed images' key options by input index, for the guest's open (OpenTreeOptions.keyOptions). */
export function keyOptions(targets: readonly Target[]): Record<number, string> {
  const byIndex: Record<number, string> = {};
  targets.forEach((t, i) => {
    if (t.probedKeyOption !== undefined) byIndex[i] = t.probedKeyOption;
  });
  return byIndex;
}

/** The --image-opts option the opened format does not have (qemu's "does not support the option"). */
export function foreignOption(target: Target, format: string): string | undefined {
  return leftoverOption(format, target.unknownFormatOption, target.probedKeyOption);
}

/** qemu's whole message for that option, naming the image and the format found. */
export function foreignOptionMessage(target: Target, format: string): string | undefined {
  const option = foreignOption(target, format);
  return option === undefined ? undefined : `Could not open '${target.errorName}': Block format '${format}' does not support the option '${option}'`;
}

/** The top image of a one-image command: -f/--format (last one wins) and --image-opts. */
export function topTarget(cmd: ParsedCommand, spec: string, probedKeys = false): Target {
  return imageTarget(spec, cmd.options.get('format')?.at(-1), cmd.options.has('image-opts'), probedKeys);
}

/** qemu looks the format up before it opens the file. */
export function checkFormat(target: Target): void {
  if (target.format !== undefined && target.format !== 'file' && !isDriverName(target.format)) {
    throw new InputImageError(`Could not open '${target.errorName}': Unknown driver '${target.format}'`);
  }
}

/**
 * Top images opened ahead of their command (the CLI's early guest start, src/cli/early-start.ts),
 * by the path as named; openTop takes them instead of opening the file again.
 */
const preopened = new Map<string, number>();

/** Opens the top image ahead of time; undefined when it cannot (openTop then reports why). */
export function preopenTop(target: Target): number | undefined {
  if (preopened.has(target.path)) return undefined;
  try {
    // Not locked yet: openTop locks it when the command takes it, after the early guest has
    // started (the lock's first call loads koffi, a few ms better spent while the guest boots).
    checkFormat(target);
    const fd = openImageFile(target, constants.O_RDONLY);
    preopened.set(target.path, fd);
    return fd;
  } catch {
    return undefined;
  }
}

/** Closes the top images opened ahead of a command that did not take them. */
export function closePreopened(): void {
  for (const fd of preopened.values()) closeSync(fd);
  preopened.clear();
}

/** Opens the top image read-only, as the user named it, with qemu's locks for reading it. */
export function openTop(target: Target): number {
  checkFormat(target);
  const early = preopened.get(target.path);
  preopened.delete(target.path);
  const fd = early ?? openImageFile(target, constants.O_RDONLY);
  lockTarget(fd, target, readUse());
  return fd;
}

/** qemu's lock bytes for `use` on the opened image (image-locks.ts); a conflict is an open failure, fd closed. */
export function lockTarget(fd: number, target: Target, use: LockUse): void {
  if (target.noLocking) return;
  // -U shares what a reader holds; a writer shares nothing (qemu refuses -U for writing, or keeps it to the backing files).
  const share = (use === 'inspect' || use === 'read') && (lockDefaults.forceShare || target.forceShare === true);
  try {
    lockOrClose(fd, use, share, target.path, isRawFormat(target.format));
  } catch (e) {
    if (e instanceof LockConflict) throw new InputImageError(`Could not open '${target.errorName}': ${e.message}`);
    throw e;
  }
}

/** Opens the image file with `flags` (check -r: read-write), refusing anything but a regular file. */
export function openImageFile(target: Target, flags: number): number {
  let fd: number;
  try {
    // O_NONBLOCK: a FIFO must not hang the open; it is refused below as not a regular file.
    fd = openSync(target.path, flags | constants.O_NONBLOCK | constants.O_NOCTTY);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? 'EIO';
    throw new InputImageError(`Could not open '${target.errorName}': Could not open '${target.path}': ${strerror(code)}`);
  }
  if (!fstatSync(fd).isFile()) {
    closeSync(fd);
    throw new InputImageError(`Could not open '${target.errorName}': 'file' driver requires '${target.path}' to be a regular file`);
  }
  return fd;
}

type StringTree = { [key: string]: string | StringTree };

/** qemu's one-line QDict JSON ({"a": "b", "c": {…}}), keys in QDict order. */
function compactJson(dict: StringTree): string {
  const items = qdictOrder(Object.keys(dict)).map((k) => {
    const v = dict[k];
    return `${quoteJsonString(k)}: ${typeof v === 'string' ? quoteJsonString(v) : compactJson(v)}`;
  });
  return `{${items.join(', ')}}`;
}

/**
 * qemu's words for a file the image names that could not be opened (info, map, check, measure):
 * the reason already names the file ("Could not open 'base.qcow2': No such file or directory").
 */
export function referencedOpenMessage(e: ReferencedFileError, target: Target): string {
  const reason = (e.cause as { reason?: string } | undefined)?.reason ?? e.message;
  const own = e.file.role === 'backing' ? `Could not open backing file: ${reason}` : reason;
  return `Could not open '${target.errorName}': ${nestedReason(e, own)}`;
}
