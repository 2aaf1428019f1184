// `info`: the trusted half. Parses qemu-img's options, opens each image of the chain read-only
// (the top one as named, backing files only through the path policy), asks a guest what each
// image's bytes say, adds what only the host knows (names, file sizes) and renders qemu's text.
import { closeSync, fstatSync } from 'node:fs';
import type { Command, CommandContext } from './types.ts';
import { OpError } from '../sandbox/run.ts';
import { runWithReferencedFiles, ReferencedFileError } from '../open-files.ts';
import { openReferenced, startChain } from '../paths/resolve.ts';
import { PathRefusedError, ReferenceOpenError, type ChainState } from '../paths/policy.ts';
import { combinePath } from '../paths/combine.ts';
import { checkNodeInfo, MalformedResultError } from '../../output/node-info.ts';
import { fileNodeInfo, imageInfo, type FileFacts } from '../../output/image-info.ts';
import { toQemuJson } from '../../output/json.ts';
import { renderHumanChain, renderHumanInfo } from '../../output/human-info.ts';
import type { QDictValue } from '../../output/qobject.ts';
import { InputImageError as InfoError, checkFormat, foreignOptionMessage, nameWithFormat, openTop, topTarget, type Target, lockTarget } from '../input-image.ts';
import { addObject } from '../secrets.ts';
import { optionsInOrder } from '../../cli/argv-stop.ts';
import { strerrorNumber } from '../../strerror-number.ts';
import type { SizeFailedAnswer } from '../../ops/info.ts';
import { usageError } from '../../cli/usage-error.ts';
import { readUse } from '../image-locks.ts';

/** Opens a backing file through the path policy, with qemu's wording for the cases qemu has too. */
function openBacking(name: string, referrer: string, ctx: CommandContext, chain: ChainState): { fd: number; path: string } {
  const path = combinePath(referrer, name);
  try {
    return openReferenced(name, referrer, 'backing', ctx.policy, chain);
  } catch (e) {
    if (e instanceof PathRefusedError) throw new InfoError(e.kind === 'loop' ? e.reason : `Could not open '${path}': ${e.reason}`);
    if (e instanceof ReferenceOpenError) throw new InfoError(`Could not open '${path}': ${e.reason}`);
    throw e;
  }
}

const factsOf = (fd: number, filename: string): FileFacts => {
  const st = fstatSync(fd);
  return { filename, actualSize: st.blocks * 512, length: st.size };
};

/** info's guest asks only for the files an image is made of (VMDK extents). */
const PART_ROLES: ReadonlySet<'extent'> = new Set(['extent'] as const);

/**
 * Runs the guest's `info` through the shared need-files loop (open-files.ts), keeping the facts
 * of every extent file it grants (their sizes are part of what info prints).
 */
async function readNode(fd: number, target: Target, ctx: CommandContext, chain: ChainState, parts: FileFacts[]) {
  // The profile travels along: some format-specific fields exist only in some qemu versions.
  const options = { format: target.format, unsafeQuirks: ctx.globals.unsafeQuirks, fileName: target.path, profile: ctx.profile };
  const onOpened = (_file: unknown, partFd: number, path: string) => parts.push(factsOf(partFd, path));
  try {
    const answer = await runWithReferencedFiles('info', options, [{ fd, path: target.path }], ctx, [], { onOpened, roles: PART_ROLES, chain });
    return sizeFailed(answer) ?? checkNodeInfo(answer);
  } catch (e) {
    if (e instanceof ReferencedFileError) {
      const reason = (e.cause as { reason?: string } | undefined)?.reason ?? e.message;
      throw new InfoError(`Could not open '${target.errorName}': ${reason}`);
    }
    throw e;
  }
}

/** The guest's answer for an image that opened but whose size query fails, checked; else undefined. */
function sizeFailed(answer: unknown): SizeFailedAnswer['size-failed'] | undefined {
  const failed = (answer as Partial<SizeFailedAnswer> | undefined)?.['size-failed'];
  if (failed === undefined) return undefined;
  if (typeof failed?.format !== 'string' || !Number.isInteger(failed.errno) || failed.errno !== (failed.errno | 0)) {
    throw new MalformedResultError('size failure');
  }
  return failed;
}

/** Reads one opened image: the guest parses its bytes, the host adds file facts. */
async function describe(fd: number, target: Target, ctx: CommandContext, chain: ChainState): Promise<{ info: QDictValue; backing?: string; backingFormat?: string }> {
  const file = factsOf(fd, target.path);
  if (target.format === 'file') return { info: fileNodeInfo(file, ctx.profile) };
  const parts: FileFacts[] = [];
  let node;
  try {
    node = await readNode(fd, target, ctx, chain, parts);
  } catch (e) {
    if (e instanceof OpError || e instanceof MalformedResultError) throw new InfoError(`Could not open '${target.errorName}': ${e.message}`);
    throw e;
  }
  const foreign = foreignOptionMessage(target, node.format);
  if (foreign !== undefined) throw new InfoError(foreign);
  if ('errno' in node) {
    // qemu names the file node here (bs->exact_filename); errno 0 adds no reason (error_setg_errno).
    throw new InfoError(`Can't get image size '${target.path}'${node.errno === 0 ? '' : `: ${strerrorNumber(node.errno)}`}`);
  }
  const backing = node['backing-filename'];
  const full = backing === undefined ? undefined : combinePath(target.path, backing);
  const info = imageInfo(node, file, full, ctx.profile, parts);
  const jsonName = nameWithFormat(target, node.format);
  if (jsonName !== undefined) info.filename = jsonName;
  return { info, backing, backingFormat: node['backing-filename-format'] };
}

/** Collects the info of the top image and, with --backing-chain, of every backing file below it. */
async function collect(top: Target, wholeChain: boolean, ctx: CommandContext): Promise<QDictValue[]> {
  const infos: QDictValue[] = [];
  const names = new Set<string>([top.path]);
  let fd = openTop(top);
  let chain: ChainState | undefined;
  let target = top;
  for (;;) {
    let level;
    try {
      chain ??= startChain(top.path, fd);
      level = await describe(fd, target, ctx, chain);
    } finally {
      closeSync(fd);
    }
    infos.push(level.info);
    if (!wholeChain || level.backing === undefined) return infos;
    // qemu's own loop check compares names; the policy also compares device and inode.
    const next = combinePath(target.path, level.backing);
    if (names.has(next)) throw new InfoError(`Backing file '${next}' creates an infinite loop.`);
    names.add(next);
    const format = level.backingFormat;
    checkFormat({ path: next, errorName: next, format });
    const opened = openBacking(level.backing, target.path, ctx, chain);
    fd = opened.fd;
    target = { path: opened.path, errorName: opened.path, format };
    lockTarget(fd, target, readUse());
  }
}

export const info: Command = async (cmd, ctx) => {
  const outputs = cmd.options.get('output') ?? [];
  const isValid = (v: string) => v === 'human' || v === 'json';
  // qemu creates each --object as its option comes (instar needs no secret to read, but a bad
  // one fails as in qemu); 10.0+ also rejects a bad --output there, older versions check the
  // last one given after the file name.
  const objects: string[] = [];
  for (const [key, value] of optionsInOrder(cmd)) {
    if (key === 'object' && !addObject(objects, value, ctx.err, ctx.progname)) return 1;
    if (key === 'output' && ctx.profile.newUsageErrors && !isValid(value)) return usageError(ctx, cmd, `--output expects 'human' or 'json' not '${value}'`);
  }
  if (cmd.args.length !== 1) return usageError(ctx, cmd, 'Expecting one image file name');
  if (outputs.length > 0 && !isValid(outputs[outputs.length - 1])) {
    ctx.err(`${ctx.progname}: --output must be used with human or json as argument.\n`);
    return 1;
  }
  const json = outputs.at(-1) === 'json';
  const wholeChain = cmd.options.has('backing-chain');
  // -U/--force-share is accepted: instar opens read-only.
  try {
    const infos = await collect(topTarget(cmd, cmd.args[0], true), wholeChain, ctx);
    if (json) ctx.out(toQemuJson(wholeChain ? infos : infos[0]) + '\n');
    else ctx.out(wholeChain ? renderHumanChain(infos, ctx.profile) : renderHumanInfo(infos[0], ctx.profile));
    return 0;
  } catch (e) {
    if (e instanceof InfoError) {
      ctx.err(`${ctx.progname}: ${e.message}\n`);
      return 1;
    }
    throw e;
  }
};
