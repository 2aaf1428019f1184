// `info`: the trusted half. Parses qemu-img's options, opens each image of the chain read-only
// (the top one as named, backing files only through the path policy), asks a guest what each
// image's bytes say, adds what only the host knows (names, file sizes) and renders qemu's text.
import { closeSync, fstatSync } from 'node:fs';
import type { Command, CommandContext } from './types.ts';
import { runOp, OpError } from '../sandbox/run.ts';
import { openReferenced, startChain } from '../paths/resolve.ts';
import { PathRefusedError, ReferenceOpenError, type ChainState } from '../paths/policy.ts';
import { combinePath } from '../paths/combine.ts';
import { checkNodeInfo, MalformedResultError } from '../../output/node-info.ts';
import { fileNodeInfo, imageInfo, type FileFacts } from '../../output/image-info.ts';
import { toQemuJson } from '../../output/json.ts';
import { renderHumanChain, renderHumanInfo } from '../../output/human-info.ts';
import type { QDictValue } from '../../output/qobject.ts';
import { InputImageError as InfoError, checkFormat, openTop, topTarget, type Target } from '../input-image.ts';
import { parseSecretObjects } from '../secrets.ts';
import { usageError } from '../../cli/usage-error.ts';

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

/** A file the image is made of besides its own (a VMDK extent), opened through the policy. */
interface PartFile {
  fd: number;
  name: string;
  facts: FileFacts;
}

/** Rounds of "the image names more files" one image may take (a descriptor naming descriptors). */
const MAX_FILE_ROUNDS = 4;
/** Most extra files one image may name (qemu's own VMDK limit is far above any real image). */
const MAX_PART_FILES = 4096;

const factsOf = (fd: number, filename: string): FileFacts => {
  const st = fstatSync(fd);
  return { filename, actualSize: st.blocks * 512, length: st.size };
};

/** The files a guest asks for, if its answer is a need-files request (checked: it is guest data). */
function neededFiles(result: unknown): { role: string; name: string }[] | undefined {
  if (typeof result !== 'object' || result === null || !('need-files' in result)) return undefined;
  const files = (result as Record<string, unknown>)['need-files'];
  if (!Array.isArray(files) || files.length === 0 || files.length > MAX_PART_FILES) throw new MalformedResultError('need-files');
  return files.map((f: unknown) => {
    const { role, name } = (f ?? {}) as Record<string, unknown>;
    if (role !== 'extent' || typeof name !== 'string') throw new MalformedResultError('need-files entry');
    return { role, name };
  });
}

/** Opens an extent an image names, through the path policy; failures worded as qemu words them. */
function openPart(name: string, target: Target, ctx: CommandContext, chain: ChainState): PartFile {
  try {
    const opened = openReferenced(name, target.path, 'extent', ctx.policy, chain);
    return { fd: opened.fd, name, facts: factsOf(opened.fd, opened.path) };
  } catch (e) {
    if (e instanceof PathRefusedError || e instanceof ReferenceOpenError) throw new InfoError(`Could not open '${target.errorName}': ${e.reason}`);
    throw e;
  }
}

/** Runs the guest's `info`, opening the further files it names and running it again with them. */
async function readNode(fd: number, target: Target, ctx: CommandContext, chain: ChainState, parts: PartFile[]) {
  // The profile travels along: some format-specific fields exist only in some qemu versions.
  const options = { format: target.format, unsafeQuirks: ctx.globals.unsafeQuirks, fileName: target.path, profile: ctx.profile };
  for (let round = 0; ; round++) {
    const devices = [{ fd, role: 'input' as const, writable: false }, ...parts.map((p) => ({ fd: p.fd, role: 'extent' as const, writable: false, name: p.name }))];
    const result = await runOp('info', options, devices, ctx.run);
    const needed = neededFiles(result);
    if (needed === undefined) return checkNodeInfo(result);
    const fresh = needed.filter((f) => !parts.some((p) => p.name === f.name));
    if (fresh.length === 0 || round + 1 >= MAX_FILE_ROUNDS || parts.length + fresh.length > MAX_PART_FILES) {
      throw new MalformedResultError('the image keeps naming more files');
    }
    for (const f of fresh) parts.push(openPart(f.name, target, ctx, chain));
  }
}

/** Reads one opened image: the guest parses its bytes, the host adds file facts. */
async function describe(fd: number, target: Target, ctx: CommandContext, chain: ChainState): Promise<{ info: QDictValue; backing?: string; backingFormat?: string }> {
  const file = factsOf(fd, target.path);
  if (target.format === 'file') return { info: fileNodeInfo(file, ctx.profile) };
  const parts: PartFile[] = [];
  let node;
  try {
    node = await readNode(fd, target, ctx, chain, parts);
  } catch (e) {
    if (e instanceof OpError || e instanceof MalformedResultError) throw new InfoError(`Could not open '${target.errorName}': ${e.message}`);
    throw e;
  } finally {
    for (const p of parts) closeSync(p.fd);
  }
  if (target.unknownFormatOption !== undefined) {
    throw new InfoError(`Could not open '${target.errorName}': Block format '${node.format}' does not support the option '${target.unknownFormatOption}'`);
  }
  const backing = node['backing-filename'];
  const full = backing === undefined ? undefined : combinePath(target.path, backing);
  const extents = parts.map((p) => p.facts);
  const info = imageInfo(node, file, full, ctx.profile, extents);
  if (target.jsonName !== undefined) info.filename = target.jsonName;
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
  }
}

export const info: Command = async (cmd, ctx) => {
  const outputs = cmd.options.get('output') ?? [];
  const isValid = (v: string) => v === 'human' || v === 'json';
  // 10.0+ rejects the first bad --output while parsing; older versions check the last one given,
  // after the file name.
  const firstBad = outputs.find((v) => !isValid(v));
  if (ctx.profile.newUsageErrors && firstBad !== undefined) return usageError(ctx, cmd, `--output expects 'human' or 'json' not '${firstBad}'`);
  if (cmd.args.length !== 1) return usageError(ctx, cmd, 'Expecting one image file name');
  if (outputs.length > 0 && !isValid(outputs[outputs.length - 1])) {
    ctx.err(`${ctx.progname}: --output must be used with human or json as argument.\n`);
    return 1;
  }
  const json = outputs.at(-1) === 'json';
  const wholeChain = cmd.options.has('backing-chain');
  // -U/--force-share and --object are accepted: instar opens read-only and needs no secret here,
  // but qemu creates the objects first, so a malformed --object fails as in qemu.
  try {
    parseSecretObjects(cmd.options.get('object') ?? []);
    const infos = await collect(topTarget(cmd, cmd.args[0]), wholeChain, ctx);
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
