// The VMDK driver: probe, and open any of the variants qemu opens (monolithicSparse,
// streamOptimized, COWD, and descriptor files naming FLAT/VMFS/SPARSE/VMFSSPARSE extents).
// Files a descriptor names are never opened here: they come from the host in ctx.devices.
import { ImageError, type BlockDevice, type Driver, type OpenContext } from '../types.ts';
import { cString } from './cstring.ts';
import { CID_AREA_BYTES, descriptorCreateType, parentHint, parseExtentLines, readCid } from './descriptor.ts';
import { BareErrnoError, NeedFilesError } from './errors.ts';
import { FlatExtent } from './flat-extent.ts';
import { VMDK3_MAGIC, VMDK4_MAGIC } from './header.ts';
import { VmdkImage, type PlacedExtent, type VmdkState } from './image.ts';
import { sizeFromSectorCount, virtualSizeOf } from '../sector-count.ts';
import { readZeroPadded, toInt64 } from './io.ts';
import { magicOf, openSparse, readHead } from './open-sparse.ts';
import { probeVmdk } from './probe.ts';
import { SeSparseExtent } from './sesparse-extent.ts';
import type { GrainExtent } from './sparse-extent.ts';
import { vmdkCreate } from './create.ts';
import { vmdkWriter } from './writer.ts';

/** Descriptors inside sparse extents may nest; qemu recurses without bound, we stop here. */
const MAX_NESTING = 4;
const MAX_VIRTUAL_SECTORS = BigInt(Math.floor(Number.MAX_SAFE_INTEGER / 512));
/** qemu's BDRV_MAX_LENGTH. */
const MAX_LENGTH = (1n << 63n) - (1n << 30n);

interface Opened {
  ext: GrainExtent | FlatExtent;
  type: string;
  file: string;
  fileName: string;
}

interface Builder {
  ctx: OpenContext;
  /** qemu's name for a file: the image's own name, or an extent name combined with its directory. */
  fileName(name: string): string;
  createType?: string;
  extents: Opened[];
}

export const vmdkDriver: Driver = {
  name: 'vmdk',
  probe: (head) => probeVmdk(head),
  open: (dev, ctx) => openVmdk(dev, ctx),
  create: vmdkCreate,
  writer: vmdkWriter,
};

/** Opens a VMDK; throws NeedFilesError when the descriptor names files not in ctx.devices. */
export function openVmdk(dev: BlockDevice, ctx: OpenContext): VmdkImage {
  try {
    return openUnchecked(dev, ctx);
  } catch (e) {
    // qemu words a bare errno "Could not open '<image>': <strerror>" (and qemu-img prefixes that).
    if (e instanceof BareErrnoError && ctx.displayName !== undefined && !e.prefixed) {
      throw new BareErrnoError(`Could not open '${ctx.displayName}': ${e.message}`, e.errno ?? 'EINVAL', true);
    }
    throw e;
  }
}

function openUnchecked(dev: BlockDevice, ctx: OpenContext): VmdkImage {
  const head = readHead(dev);
  const own = ctx.displayName;
  const b: Builder = { ctx, extents: [], fileName: (name) => (own === undefined ? name : name === '' ? own : pathCombine(own, name)) };
  const magic = magicOf(head);
  const sparse = magic === VMDK3_MAGIC || magic === VMDK4_MAGIC;
  if (sparse) addSparse(b, dev, head, '', '', 0);
  else openDescriptor(b, cString(head), 0);
  // CID and parent hint are read from the first 20 sectors of the descriptor area.
  const area = new Uint8Array(CID_AREA_BYTES);
  readZeroPadded(dev, area, sparse ? 0x200 : 0);
  const backingName = parentHint(area);
  const cid = readCid(area, false);
  const parentCid = readCid(area, true);
  return new VmdkImage({
    createType: b.createType ?? '',
    cid,
    parentCid,
    backingName: backingName || undefined,
    ...place(b.extents),
  });
}

function openDescriptor(b: Builder, desc: string, depth: number): void {
  if (depth > MAX_NESTING) throw new ImageError('VMDK descriptors nested too deeply');
  b.createType = descriptorCreateType(desc);
  const { extents, error } = parseExtentLines(desc);
  const devices = b.ctx.devices ?? new Map<string, BlockDevice>();
  const missing = [...new Set(extents.map((e) => e.name).filter((n) => !devices.has(n)))];
  const flat = (name: string) => extents.every((e) => e.name !== name || e.type === 'FLAT' || e.type === 'VMFS');
  if (missing.length) throw new NeedFilesError(missing.map((name) => ({ role: 'extent', name, ...(flat(name) ? { format: 'raw' as const } : {}) })));
  for (const line of extents) {
    const dev = devices.get(line.name)!;
    if (line.type === 'FLAT' || line.type === 'VMFS') {
      const ext = new FlatExtent(dev, line.sectors, toInt64(line.flatOffset << 9n));
      b.extents.push({ ext, type: line.type, file: line.name, fileName: b.fileName(line.name) });
    } else if (line.type === 'SESPARSE') {
      const ext = new SeSparseExtent(dev, b.fileName(line.name), b.ctx.writable);
      b.extents.push({ ext, type: line.type, file: line.name, fileName: b.fileName(line.name) });
    } else {
      addSparse(b, dev, readHead(dev), line.type, line.name, depth + 1);
    }
  }
  if (error) throw error;
}

function addSparse(b: Builder, dev: BlockDevice, head: Uint8Array, type: string, file: string, depth: number): void {
  const r = openSparse(dev, head, b.fileName(file), b.ctx.writable);
  if ('descriptor' in r) {
    openDescriptor(b, r.descriptor, depth);
    // qemu then stamps the outer type word on the last extent the inner descriptor added.
    const last = b.extents.at(-1);
    if (last && type) last.type = type;
    return;
  }
  if (magicOf(head) === VMDK4_MAGIC) {
    if (r.compressed) b.createType = 'streamOptimized';
    else b.createType ??= 'monolithicSparse';
  }
  b.extents.push({ ext: r.extent, type, file, fileName: b.fileName(file) });
}

/**
 * qemu's path_combine (as src/host/paths/combine.ts has it; format code does not import host
 * code): a relative extent name replaces what follows the last '/' of the image's name.
 */
function pathCombine(base: string, name: string): string {
  if (name.startsWith('/')) return name;
  const colon = base.indexOf(':');
  const slash = base.lastIndexOf('/');
  let keep = colon >= 0 && (slash < 0 || colon < base.indexOf('/')) ? colon + 1 : 0;
  if (slash + 1 > keep) keep = slash + 1;
  return base.slice(0, keep) + name;
}

/**
 * The extents qemu's check still walks when the size query fails: with a positive total it steps
 * one flat extent at a time (a negative total ends its walk at once). Kept here: the flat ones up
 * to the first other kind or the first start a number cannot hold (nothing is read through them).
 */
function checkedByQemu(opened: Opened[]): PlacedExtent[] {
  const placed: PlacedExtent[] = [];
  let start = 0n;
  for (const o of opened) {
    if (!o.ext.flat || o.ext.sectors < 0n || start > MAX_VIRTUAL_SECTORS) break;
    const end = start + o.ext.sectors;
    placed.push({ ext: o.ext, start: Number(start) * 512, end: Number(end * 512n), type: o.type, file: o.file, fileName: o.fileName });
    start = end;
  }
  return placed;
}

/** Lays extents end to end; sizes qemu would overflow on are refused. */
function place(opened: Opened[]): Pick<VmdkState, 'extents' | 'sizeQuery'> {
  // No extents (every line skipped or unparsable): qemu opens a 0-byte disk, which map, compare
  // and check accept; its `info` and `convert` then abort on an assertion, where we answer.
  // qemu sums sectors in an int64 and then checks the byte size, computed with a wrapping shift.
  const total = toInt64(opened.reduce((sum, o) => sum + o.ext.sectors, 0n));
  if (((total << 9n) & ((1n << 64n) - 1n)) > MAX_LENGTH) {
    throw new ImageError('Could not refresh total sector count: File too large', 'EFBIG');
  }
  // A total past int64 bytes that wraps to a small size opens in qemu, and then every command
  // fails its size query (sector-count.ts) before any I/O.
  const sized = sizeFromSectorCount(total);
  const { sizeFailure } = sized;
  if (sizeFailure) {
    // Every read and block status fails first (convert takes its target's size from the count).
    return { extents: sizeFailure.sectors ? [] : checkedByQemu(opened), sizeQuery: { virtualSize: virtualSizeOf(sized), sizeFailure } };
  }
  let sectors = 0n;
  const extents = opened.map((o) => {
    // qemu goes on with what wrapped (and fails later, in ways that depend on the command).
    if (o.ext.sectors < 0n || sectors + o.ext.sectors > MAX_VIRTUAL_SECTORS) {
      throw new ImageError('Image size is too large for this reader', 'EFBIG');
    }
    const start = Number(sectors) * 512;
    sectors += o.ext.sectors;
    return { ext: o.ext, start, end: Number(sectors) * 512, type: o.type, file: o.file, fileName: o.fileName };
  });
  return { extents };
}
