// `create`: the trusted half. qemu-img's getopt loop and argument rules, then bdrv_img_create's
// steps in its order (format, -o, size, backing file, "Formatting ..."), all checked before the
// host touches the new file; then the host creates the file (and an external data file), a guest
// writes the format's layout through the fds, and the host fsyncs. A create that fails after the
// host created a file removes it again.
import { closeSync, constants, fstatSync, fsyncSync, openSync, unlinkSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import type { Command, CommandContext } from './types.ts';
import type { ParsedCommand } from '../../cli/types.ts';
import { OpError, runOp, type HostDevice } from '../sandbox/run.ts';
import { parseSecretObjects, SecretError } from '../secrets.ts';
import { usageError } from '../../cli/usage-error.ts';
import { parseMapSize } from './map-size.ts';
import { isValidOptionList, OptionListError } from './measure-options.ts';
import { hasHelpOption, lookupFormat, parseSetOptions, qemuFullVersion, typesOf } from './create-options.ts';
import { CreateFailure, probeBacking } from './create-backing.ts';
import { formattingLine, optionHelp, type SetOption } from '../../output/create-text.ts';
import { hasProtocol } from '../paths/combine.ts';
import { ImageError, type CreateEnvironment, type CreatePlan } from '../../formats/types.ts';
import { strerror } from '../../strerror.ts';
import { MalformedRange, PreallocationFailure, preallocationWriteFailure, reserveNamedRange } from '../preallocate.ts';
import { strerrorNumber } from '../../strerror-number.ts';
import type { CreateResult } from '../../ops/create.ts';
import { LockConflict, openCreating } from '../image-locks.ts';
import { printErrorLines } from './error-lines.ts';
import { optionsInOrder } from '../../cli/argv-stop.ts';

interface CreateArgs {
  format: string;
  backing?: string;
  backingFormat?: string;
  /** -o lists joined with ',' (accumulate_options). */
  options?: string;
  quiet: boolean;
  unsafe: boolean;
  filename?: string;
  /** The size argument; -1 when absent (qemu's img_size). */
  size: bigint;
  /** The --object values (secrets a LUKS or encrypted qcow2 image takes its passphrase from). */
  objects: string[];
}

/** A failure that stands alone (printed after "<progname>: " only), exit status 1. */
class PlainFailure extends Error {}

/** The getopt loop (options checked as they come), then the file name and size arguments. */
function parseArgs(cmd: ParsedCommand, ctx: CommandContext): CreateArgs | number {
  const objects: string[] = [];
  const args: CreateArgs = { format: 'raw', quiet: false, unsafe: false, size: -1n, objects };
  for (const [key, value] of optionsInOrder(cmd)) {
    if (key === 'backing-format') args.backingFormat = value;
    else if (key === 'backing') args.backing = value;
    else if (key === 'format') args.format = value;
    else if (key === 'quiet') args.quiet = true;
    else if (key === 'backing-unsafe') args.unsafe = true;
    else if (key === 'options') {
      if (!isValidOptionList(value)) throw new PlainFailure(`Invalid option list: ${value}`);
      args.options = args.options === undefined ? value : `${args.options},${value}`;
    } else if (key === 'object') {
      // qemu creates each object as its option comes: a bad one stops the command there.
      objects.push(value);
      parseSecretObjects(objects);
    }
  }
  args.filename = cmd.args[0];
  if (hasHelpOption(args.options)) return args;
  if (args.filename === undefined) return usageError(ctx, cmd, 'Expecting image file name');
  if (cmd.args.length > 1) {
    const r = parseMapSize('image size', cmd.args[1], ctx.profile);
    if ('error' in r) throw new PlainFailure(r.error);
    if (r.warning) ctx.err(`${ctx.progname}: ${r.warning}\n`);
    args.size = r.value;
  }
  if (cmd.args.length > 2) return usageError(ctx, cmd, `Unexpected argument: ${cmd.args[2]}`);
  return args;
}

/** print_block_option_help: the format's options (and the file protocol's when a file is named). */
function printHelp(args: CreateArgs, ctx: CommandContext): number {
  const found = lookupFormat(args.format, ctx.profile);
  if ('error' in found) {
    throw new PlainFailure(found.error === 'unknown' ? `Unknown file format '${args.format}'` : `Format driver '${args.format}' does not support image creation`);
  }
  if (!('capability' in found)) throw new PlainFailure(`instar cannot list the create options of ${args.format} images yet`);
  const withProtocol = args.filename !== undefined;
  ctx.out(optionHelp(withProtocol ? found.specs : found.capability.options, args.format, withProtocol));
  return 0;
}

/** Creates (or truncates) a file the create writes; tells whether this create made it (O_EXCL, no race). */
function createFile(path: string): { fd: number; created: boolean } {
  // O_NONBLOCK: a FIFO must not hang the open; anything but a regular file is refused below.
  const flags = constants.O_CREAT | constants.O_WRONLY | constants.O_NONBLOCK | constants.O_NOCTTY;
  let fd: number;
  let created = true;
  try {
    try {
      fd = openSync(path, flags | constants.O_EXCL, 0o644);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      created = false;
      // An existing file is truncated, as qemu truncates it, once qemu's locks are held (image-locks.ts).
      fd = openCreating(path, flags | constants.O_TRUNC);
    }
  } catch (e) {
    if (e instanceof LockConflict) throw new CreateFailure(e.message);
    throw new CreateFailure(`Could not create '${path}': ${strerror((e as NodeJS.ErrnoException).code ?? 'EIO')}`);
  }
  if (!fstatSync(fd).isFile()) {
    closeSync(fd);
    throw new CreateFailure(`instar creates images only as regular files, and '${path}' is not one`);
  }
  return { fd, created };
}

/**
 * Reserves [start, end) of the new image's file (checked: the guest may name the range), failing
 * the create in qemu's words (`wording` adds what the format's driver says around them).
 */
function reserveOrFail(fd: number, range: unknown, wording = (message: string) => message): void {
  try {
    reserveNamedRange(fd, range);
  } catch (e) {
    if (e instanceof MalformedRange) throw new CreateFailure('the guest answered create in a malformed way');
    if (e instanceof PreallocationFailure) throw new CreateFailure(wording(e.message));
    throw e;
  }
}

/** The host's files, the guest's writes, fsync; removes what it created when anything fails. */
async function writeImage(filename: string, format: string, plan: CreatePlan, ctx: CommandContext): Promise<void> {
  const files: { path: string; fd: number; created: boolean; role: HostDevice['role'] }[] = [];
  let done = false;
  try {
    files.push({ path: filename, ...createFile(filename), role: 'output' });
    if (typeof plan.dataFile === 'string') files.push({ path: plan.dataFile, ...createFile(plan.dataFile), role: 'data-file' });
    // VMDK extents: names derived from the user's file name, created beside it as qemu creates them.
    for (const path of plan.extentFiles ?? []) files.push({ path, ...createFile(path), role: 'extent' });
    const devices: HostDevice[] = files.map((f) => ({ fd: f.fd, role: f.role, writable: true }));
    let result: CreateResult;
    try {
      result = (await runOp('create', { format, plan }, devices, ctx.run)) as CreateResult;
    } catch (e) {
      if (e instanceof OpError) throw new CreateFailure(e.message);
      throw e;
    }
    if (typeof result !== 'object' || result === null) throw new CreateFailure('the guest answered create in a malformed way');
    if ('failed' in result) {
      if (result.failed === 'EFBIG') throw new ImageError('File too large', 'EFBIG');
      const code = String(result.failed);
      throw new CreateFailure(preallocationWriteFailure(format, plan, code) ?? `Could not write '${filename}': ${strerror(code)}`);
    }
    // preallocation=falloc (raw, file, luks): the guest laid out the file, the host reserves what
    // it left as holes. Where koffi cannot be had they stay holes: the same zeros, read back.
    if (plan.fallocate === true) reserveOrFail(files[0].fd, [0, fstatSync(files[0].fd).size]);
    // qcow2 falloc: the range the guest names (its data area and what follows), reserved in
    // qemu's qcow2 resize of the file to the new size.
    if ('reserve' in result && result.reserve !== undefined) {
      reserveOrFail(files[0].fd, result.reserve, (message) => `Could not resize image: Failed to resize underlying file: ${message}`);
    }
    // The guest cannot fsync (its permission model refuses it): the host makes the image durable.
    for (const f of files) fsyncSync(f.fd);
    done = true;
  } finally {
    for (const f of files) {
      closeSync(f.fd);
      if (!done && f.created) unlinkSync(f.path);
    }
  }
}

/** The size qemu reads from the options: int64 of the uint64 (UINT64_MAX is "none"). */
const optionSize = (set: ReadonlyMap<string, SetOption>): bigint => {
  const v = set.get('size');
  return v === undefined ? -1n : BigInt.asIntN(64, BigInt(v.value));
};

const setNumber = (set: Map<string, SetOption>, name: string, n: bigint) => {
  const value = BigInt.asUintN(64, n).toString();
  set.set(name, { value, text: value });
};

/** bdrv_img_create, step by step. */
async function runCreate(args: CreateArgs, ctx: CommandContext): Promise<number> {
  const filename = args.filename!;
  const found = lookupFormat(args.format, ctx.profile);
  if ('error' in found) {
    throw new CreateFailure(found.error === 'unknown' ? `Unknown file format '${args.format}'` : `Format driver '${args.format}' does not support image creation`);
  }
  if (hasProtocol(filename)) throw new CreateFailure(`instar creates only plain files, not '${filename.slice(0, filename.indexOf(':'))}:' names`);
  const types = 'capability' in found ? typesOf(found.specs) : found.types;
  let set: Map<string, SetOption>;
  try {
    set = parseSetOptions(args.options, types, ctx.profile.newUsageErrors);
  } catch (e) {
    if (!(e instanceof OptionListError)) throw e;
    const [first, ...rest] = e.lines;
    throw new CreateFailure(first.text, rest.map((l) => `${l.text}\n`).join(''));
  }
  if (!('capability' in found)) throw new CreateFailure(`instar cannot create ${args.format} images yet; nothing was written`);
  if (!set.has('size')) setNumber(set, 'size', args.size);
  else if (args.size !== -1n) throw new CreateFailure('The image size must be specified only once');
  if (args.backing !== undefined) {
    if (!Object.hasOwn(types, 'backing_file')) throw new CreateFailure(`Backing file not supported for file format '${args.format}'`);
    set.set('backing_file', { value: args.backing, text: args.backing });
  }
  if (args.backingFormat !== undefined) {
    if (!Object.hasOwn(types, 'backing_fmt')) throw new CreateFailure(`Backing file format not supported for file format '${args.format}'`);
    set.set('backing_fmt', { value: args.backingFormat, text: args.backingFormat });
  }
  const backing = set.get('backing_file')?.value;
  const backingFormat = set.get('backing_fmt')?.value;
  if (backing === filename) throw new CreateFailure('Error: Trying to create an image with the same filename as the backing file');
  if (backing === '') throw new CreateFailure('Expected backing file name, got empty string');
  let size = optionSize(set);
  if (backing !== undefined && !args.unsafe) {
    const probed = await probeBacking(filename, backing, backingFormat, ctx);
    if (backingFormat === undefined) {
      // 10.0 ends the hint with a newline; 7.2 does not.
      throw new CreateFailure('Backing file specified without backing format', `Detected format of ${probed.format}.${ctx.profile.newUsageErrors ? '\n' : ''}`);
    }
    if (size === -1n) {
      if (probed.sizeErrno !== undefined) throw new CreateFailure(`Could not get size of '${backing}': ${strerrorNumber(probed.sizeErrno)}`);
      // bdrv_getlength counts whole sectors.
      size = ((BigInt(probed.virtualSize) + 511n) / 512n) * 512n;
      setNumber(set, 'size', size);
    }
  } else if (backing !== undefined && backingFormat === undefined) {
    throw new CreateFailure('Backing file specified without backing format');
  }
  if (size === -1n) throw new CreateFailure('Image creation needs a size parameter');
  if (!args.quiet) ctx.out(formattingLine(filename, args.format, found.specs, set));

  const normalized = new Map([...set].map(([k, v]) => [k, v.value]));
  try {
    const env: CreateEnvironment = { now: Math.floor(Date.now() / 1000), filename, qemuVersion: qemuFullVersion(ctx.profile), randomBytes: (n: number) => randomBytes(n) };
    env.secrets = parseSecretObjects(args.objects);
    // The VMDK driver opens its backing file alone (even with -u) to record its CID.
    if (args.format === 'vmdk' && backing !== undefined && normalized.get('subformat')?.endsWith('Flat') !== true) {
      // Its option checks come first: a trial plan with a stand-in CID.
      found.capability.plan(normalized, BigInt.asUintN(64, size), { ...env, parentCid: 0 });
      const parent = await probeBacking(filename, backing, undefined, ctx, true);
      if (parent.format !== 'vmdk') throw new CreateFailure(`Invalid backing file format: ${parent.format}. Must be vmdk`);
      env.parentCid = parent.cid;
    }
    const plan = found.capability.plan(normalized, BigInt.asUintN(64, size), env);
    await writeImage(filename, args.format, plan, ctx);
  } catch (e) {
    if (!(e instanceof ImageError)) throw e;
    if (e.errno !== 'EFBIG') throw new CreateFailure(e.message);
    // qemu's LUKS driver words the payload's failed truncate itself (block/crypto.c), and its
    // generic crypto layer hides the errno from bdrv_img_create's rewording.
    if (args.format === 'luks') throw new CreateFailure('The requested file size is too large');
    // bdrv_img_create's wording for EFBIG, with a hint when the format has a cluster size.
    const hint = Object.hasOwn(types, 'cluster_size') ? ' (try using a larger cluster size)' : '';
    throw new CreateFailure(`The image size is too large for file format '${args.format}'${hint}`);
  }
  return 0;
}

export const create: Command = async (cmd, ctx) => {
  try {
    const args = parseArgs(cmd, ctx);
    if (typeof args === 'number') return args;
    if (hasHelpOption(args.options)) return printHelp(args, ctx);
    try {
      return await runCreate(args, ctx);
    } catch (e) {
      if (!(e instanceof CreateFailure)) throw e;
      ctx.err(`${ctx.progname}: ${args.filename}: ${e.message}\n${e.hint}`);
      return 1;
    }
  } catch (e) {
    if (e instanceof PlainFailure || e instanceof SecretError) {
      printErrorLines(ctx, e.message);
      return 1;
    }
    throw e;
  }
};
