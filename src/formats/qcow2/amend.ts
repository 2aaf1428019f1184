// `amend -o` for qcow2, as qemu's qcow2_amend_options runs it: the options checked in the driver's
// declaration order (the first bad one fails with qemu's words), then the changes in qemu's order,
// each followed by a header rewrite, with the errors qemu only finds between two rewrites.
//
// What instar does: compat=1.1 upgrades (header grows to version 3), lazy_refcounts on/off,
// data_file (rename) and data_file_raw=off, every no-op (a value equal to the image's),
// compat=0.10 downgrades (zero clusters expanded: expand-zero.ts), refcount_bits changes
// (refcount-order.ts), v2 -> v3 upgrades that rewrite the snapshot table (amend-upgrade.ts), and
// size changes: qemu's truncate, planned by resize.ts (byte for byte what `resize --shrink`
// writes; snapshots and a backing file included) over the file as the changes before it leave
// it, a downgrade planned after it. LUKS key slots: amend-encryption.ts. Refused before writing
// anything: a zero cluster that needs a new cluster (over a backing file) after a truncate that
// allocated or freed clusters in the same amend, where qemu's allocation hint is not known here.
// Persistent bitmaps: the whole amend runs between qemu's open and close (amend-bitmaps.ts).
//
// Crash safety: qemu rewrites the header up to three times; every rewrite before the last writes
// a prefix of the same change (they differ only in fields the later ones also set), so instar
// writes the final header once: one write of the first cluster, which a crash can only tear.
import { ImageError, type AmendCapability, type AmendContext, type AmendPlan, type BlockDevice, type Image } from '../types.ts';
import { planEncryptionAmend } from './amend-encryption.ts';
import { planTruncateOpened, qcow2Resize, type Planned } from './resize.ts';
import { aroundAmend, type AmendSession } from './amend-bitmaps.ts';
import { openWritesBitmaps } from './bitmap-session.ts';
import { Qcow2Image } from './driver.ts';
import { ReplayedDevice } from '../replayed-device.ts';
import type { RepairStep } from '../repair.ts';
import { readAt } from '../bytes.ts';
import { AUTOCLEAR, COMPAT_LAZY_REFCOUNTS, CRYPT, INCOMPAT, MAX_L1_BYTES, SNAPSHOT_HEADER_SIZE, parseHeader, type Qcow2Header } from './header.ts';
import { readHeaderModel } from './header-model.ts';
import { headerRewriteRefusal, planHeaderWrite } from './rebase-unsafe.ts';
import type { Qcow2HeaderModel } from './header-write.ts';
import { AmendProgress } from './amend-progress.ts';
import { planRefcountOrder } from './refcount-order.ts';
import { rewriteSnapshotTable } from './amend-upgrade.ts';
import { planExpandZeroClusters } from './expand-zero.ts';
import { PlanRefusal } from './refcount-update.ts';

import { QCOW2_AMEND } from '../amend-options.ts';

/** What the options ask for, after qemu's per-option checks. */
interface Request {
  version: 2 | 3;
  size?: bigint;
  backingFile?: string;
  backingFormat?: string;
  dataFile?: string;
  dataFileRaw: boolean;
  lazy: boolean;
  refcountBits: number;
  encryption: boolean;
}

class AmendError extends Error {}

const refused = (why: string): AmendPlan => ({ refused: `instar cannot amend this qcow2 image: ${why}; nothing was written` });
/** A planner's refusal, in instar's words (the refcount model's own lack the image's name). */
const refusedBy = (e: Error): AmendPlan => ({ refused: e.message.startsWith('instar ') ? e.message : `instar cannot amend this qcow2 image: ${e.message}` });

/** qemu's option loop: a Request, or the first error it reports. */
function readRequest(h: Qcow2Header, values: ReadonlyMap<string, string>): Request {
  const r: Request = {
    version: h.version,
    dataFileRaw: (h.autoclear & AUTOCLEAR.dataFileRaw) !== 0n,
    lazy: (h.compatible & COMPAT_LAZY_REFCOUNTS) !== 0n,
    refcountBits: 2 ** h.refcountOrder,
    encryption: false,
  };
  for (const [name] of QCOW2_AMEND) {
    const value = values.get(name);
    if (value === undefined) continue;
    if (name === 'size') r.size = BigInt(value);
    else if (name === 'compat') {
      if (value === '0.10' || value === 'v2') r.version = 2;
      else if (value === '1.1' || value === 'v3') r.version = 3;
      else throw new AmendError(`Unknown compatibility level ${value}`);
    } else if (name === 'backing_file') r.backingFile = value;
    else if (name === 'backing_fmt') r.backingFormat = value;
    else if (name === 'data_file') {
      if (!(h.incompatible & INCOMPAT.dataFile)) throw new AmendError('data-file can only be set for images that use an external data file');
      r.dataFile = value;
    } else if (name === 'data_file_raw') {
      if (value === 'on' && !r.dataFileRaw) throw new AmendError('data-file-raw cannot be set on existing images');
      r.dataFileRaw = value === 'on';
    } else if (name === 'lazy_refcounts') r.lazy = value === 'on';
    else if (name === 'refcount_bits') {
      // qemu stores the uint64 in a C int.
      const bits = Number(BigInt.asIntN(32, BigInt(value)));
      if (bits <= 0 || bits > 64 || (bits & (bits - 1)) !== 0) throw new AmendError('Refcount width must be a power of two and may not exceed 64 bits');
      r.refcountBits = bits;
    } else {
      if (h.cryptMethod === CRYPT.none) throw new AmendError("Can't amend encryption options - encryption not present");
      if (h.cryptMethod !== CRYPT.luks) throw new AmendError('Only LUKS encryption options can be amended');
      r.encryption = true;
    }
  }
  return r;
}

interface SnapshotEntry {
  l1Offset: bigint;
  l1Size: number;
  extraSize: number;
  vmStateSize: bigint;
  /** From the extra data; absent in entries too short to hold it (qemu then takes the disk's size). */
  diskSize?: bigint;
}

/** The snapshot table's entries, as far as amend needs them. */
function snapshots(dev: BlockDevice, h: Qcow2Header): SnapshotEntry[] {
  // The driver read this table at open: offsets and sizes are within its checked bounds.
  const list: SnapshotEntry[] = [];
  let offset = h.snapshotsOffset;
  for (let i = 0; i < h.nbSnapshots; i++) {
    const e = readAt(dev, offset, SNAPSHOT_HEADER_SIZE);
    const extraSize = e.readUInt32BE(36);
    const extra = readAt(dev, offset + BigInt(SNAPSHOT_HEADER_SIZE), Math.min(extraSize, 16));
    list.push({
      l1Offset: e.readBigUInt64BE(0),
      l1Size: e.readUInt32BE(8),
      extraSize,
      vmStateSize: extraSize >= 8 ? extra.readBigUInt64BE(0) : BigInt(e.readUInt32BE(32)),
      diskSize: extraSize >= 16 ? extra.readBigUInt64BE(8) : undefined,
    });
    const length = SNAPSHOT_HEADER_SIZE + extraSize + e.readUInt16BE(12) + e.readUInt16BE(14);
    offset += BigInt(Math.ceil(length / 8) * 8);
  }
  return list;
}

/** C's g_strcmp0 equality: both absent, or the same text. */
const sameName = (a: string | undefined, b: Uint8Array | undefined): boolean =>
  a === undefined ? b === undefined : b !== undefined && Buffer.from(a).equals(Buffer.from(b));

function plan(dev: BlockDevice, image: Image, values: ReadonlyMap<string, string>, ctx?: AmendContext): AmendPlan {
  // Persistent bitmaps: the amend runs between qemu's writable open and close (amend-bitmaps.ts).
  if (openWritesBitmaps(dev)) return aroundAmend(dev, (opened, session) => planAmend(opened, image, values, ctx, session));
  return planAmend(dev, image, values, ctx);
}

/** The amend over `dev`; `session`: a bitmap session holds the image (what the close needs is left in it). */
function planAmend(dev: BlockDevice, image: Image, values: ReadonlyMap<string, string>, ctx?: AmendContext, session?: AmendSession): AmendPlan {
  const h = parseHeader(dev);
  // The state qemu holds after its read-write open, which already rewrote the header when it
  // cleared unknown autoclear bits: errors found later leave that rewrite behind.
  const m = readHeaderModel(dev, h);
  const opened = openRewrite(dev, h, m);
  let r: Request;
  try {
    r = readRequest(h, values);
  } catch (e) {
    if (e instanceof AmendError) return { steps: opened, error: [e.message] };
    throw e;
  }
  const refusal = headerRewriteRefusal(dev, session !== undefined);
  if (refusal) return refused(refusal);
  // The plan follows qemu's sequence; nothing is applied before it is complete, so a refusal
  // anywhere in it leaves the image untouched. `before`: the writes of the steps done so far
  // that precede the header's (a refcount width change).
  const changesWidth = r.refcountBits !== 2 ** h.refcountOrder;
  const progress = new AmendProgress(Number(r.version !== h.version) + Number(changesWidth) + Number(r.encryption));
  const before: RepairStep[] = [];
  const done = (error?: string[], more: RepairStep[] = []): AmendPlan => {
    try {
      return { steps: [...before, ...more, ...headerSteps(dev, m)], error, progress: progress.values };
    } catch (e) {
      // qemu's upgrade fails on its first rewrite; a later one fails with the same words.
      if (e instanceof ImageError) return { steps: [], error: [e.message], progress: progress.values };
      throw e;
    }
  };
  /** qemu's free_cluster_index: where its next allocation starts searching. */
  let hint = 0;
  if (r.version > h.version) {
    // qemu reports the upgrade's two steps: 0 of 2, the snapshot table, 1 of 2, the header, 2 of 2.
    progress.start('upgrade');
    progress.report(0, 2);
    if (h.nbSnapshots > 0 && snapshots(dev, h).some((sn) => sn.extraSize < 16)) {
      try {
        const rewrite = rewriteSnapshotTable(dev, h);
        before.push(...rewrite.steps);
        m.snapshotsOffset = rewrite.snapshotsOffset;
        hint = rewrite.freeClusterIndex;
        if (session) session.freeClusterIndex = hint;
      } catch (e) {
        if (e instanceof PlanRefusal) return refusedBy(e);
        throw e;
      }
    }
    progress.report(1, 2);
    progress.report(2, 2);
    m.version = 3;
  }
  if (r.encryption) {
    // The key slots before the header: either crash leaves an image that opens with its old keys.
    const keySlots = planEncryptionAmend(dev, h, ctx);
    if ('refused' in keySlots) return keySlots;
    // An erase qemu's write function stopped leaves its header write behind.
    before.push(...keySlots.steps);
    if (keySlots.error) return { ...done(keySlots.error), ...(keySlots.errorHint === undefined ? {} : { errorHint: keySlots.errorHint }) };
  }
  if (changesWidth) {
    if (r.version < 3 && r.refcountBits !== 16) return done(['Refcount widths other than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)']);
    progress.start('refcount-order');
    let width;
    try {
      // Over the file as the writes before it (a snapshot table, key slots) leave it.
      const now = before.length > 0 ? new ReplayedDevice(dev, before) : dev;
      width = planRefcountOrder(now, now === dev ? h : parseHeader(now), Math.log2(r.refcountBits), progress, hint);
    } catch (e) {
      if (e instanceof PlanRefusal) return refusedBy(e);
      throw e;
    }
    before.push(...width.steps);
    if ('error' in width) return done([width.error]);
    hint = width.freeClusterIndex;
    if (session) session.freeClusterIndex = hint;
    m.refcountOrder = Math.log2(r.refcountBits);
    m.refcountTableOffset = BigInt(width.tableOffset);
    m.refcountTableClusters = width.tableClusters;
  }
  m.autoclear = r.dataFileRaw ? m.autoclear | AUTOCLEAR.dataFileRaw : m.autoclear & ~AUTOCLEAR.dataFileRaw;
  if (r.dataFile !== undefined) m.dataFile = r.dataFile === '' ? undefined : Buffer.from(r.dataFile);
  if ((r.backingFile !== undefined || r.backingFormat !== undefined) &&
    (!sameName(r.backingFile, m.backingFile) || !sameName(r.backingFormat, m.backingFormat))) {
    return done(['Cannot amend the backing file', "You can use 'qemu-img rebase' instead."]);
  }
  if (r.lazy !== ((m.compatible & COMPAT_LAZY_REFCOUNTS) !== 0n)) {
    if (r.lazy && r.version < 3) return done(['Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)']);
    m.compatible = r.lazy ? m.compatible | COMPAT_LAZY_REFCOUNTS : m.compatible & ~COMPAT_LAZY_REFCOUNTS;
  }
  if (r.size !== undefined && r.size !== 0n && (r.size !== m.size || h.nbSnapshots > 0)) {
    // qemu truncates here (blk_truncate, exact): the same writes as `resize --shrink`, with
    // internal snapshots and over a backing file too, planned over the file as the changes
    // before it leave it; a downgrade after it is planned over the truncated file in turn.
    const first = [...before, ...headerSteps(dev, m)];
    const after = first.length > 0 ? new ReplayedDevice(dev, first) : dev;
    const truncated = resize(after, image, r.size, session);
    if (!('steps' in truncated) || truncated.error) return 'steps' in truncated ? { ...truncated, steps: first, progress: progress.values } : truncated;
    const steps = [...first, { kind: 'barrier' } as const, ...truncated.steps];
    if (r.version >= h.version) return { steps, progress: progress.values };
    const resized = new ReplayedDevice(after, truncated.steps);
    const h2 = parseHeader(resized);
    const m2 = readHeaderModel(resized, h2);
    const after2 = (error?: string[], more: RepairStep[] = []): AmendPlan => ({ steps: [...steps, { kind: 'barrier' }, ...more, ...headerSteps(resized, m2)], error, progress: progress.values });
    // A truncate that only rewrote header fields allocated and freed nothing: qemu's allocation
    // hint is as before. Else it is not known here, and an expansion that allocates is refused.
    const headerOnly = truncated.steps.every((s) => s.kind === 'barrier' || (s.kind === 'write' && s.pos + s.bytes.length <= h.clusterSize));
    return downgrade(resized, h2, m2, after2, progress, headerOnly ? hint : undefined);
  }
  if (r.version < h.version && before.length > 0) {
    // A refcount width change before: the expansion counts in the new width, from qemu's hint.
    const first = [...before, ...headerSteps(dev, m)];
    const after = new ReplayedDevice(dev, first);
    const h2 = parseHeader(after);
    const m2 = readHeaderModel(after, h2);
    const then = (error?: string[], more: RepairStep[] = []): AmendPlan => ({ steps: [...first, { kind: 'barrier' }, ...more, ...headerSteps(after, m2)], error, progress: progress.values });
    return downgrade(after, h2, m2, then, progress, hint);
  }
  if (r.version < h.version) return downgrade(dev, h, m, done, progress, hint);
  return done();
}

/** The size change as qemu's qcow2_co_truncate makes it (resize.ts plans it). */
function resize(dev: BlockDevice, image: Image, size: bigint, session?: AmendSession): AmendPlan {
  if (size > BigInt(Number.MAX_SAFE_INTEGER)) return refused('the new size is too large');
  const backingSize = image instanceof Qcow2Image ? image.backingSize : undefined;
  const request = { newSize: Number(size), preallocation: 'off', readGuest: (buf: Uint8Array, at: number) => image.read(buf, at), ...(backingSize === undefined ? {} : { backingSize }) } as const;
  const plan = session ? planTruncateOpened(dev, request, session.bitmaps) : qcow2Resize.plan(image, dev, request);
  if ('steps' in plan) {
    if (session) {
      session.virtualSize = size;
      session.freeClusterIndex = 'freeClusterIndex' in plan ? (plan as Planned).freeClusterIndex : undefined;
    }
    return { steps: plan.steps };
  }
  // resize.ts says "instar cannot resize ..." for what it refuses; anything else is qemu's error.
  return plan.error.startsWith('instar ') ? { refused: plan.error } : { steps: [], error: [plan.error] };
}

/**
 * qemu's qcow2_downgrade: its checks in order, then the zero cluster expansion (expand-zero.ts,
 * its progress per L1 entry), then zstd without compressed clusters turned back into zlib.
 */
function downgrade(dev: BlockDevice, h: Qcow2Header, m: Qcow2HeaderModel, done: (error?: string[], more?: RepairStep[]) => AmendPlan, progress: AmendProgress, hint: number | undefined): AmendPlan {
  progress.start('downgrade');
  if (m.refcountOrder !== 4) return done(['compat=0.10 requires refcount_bits=16']);
  if (h.incompatible & INCOMPAT.dataFile) return done(['Cannot downgrade an image with a data file']);
  const list = snapshots(dev, h);
  if (list.some((sn) => sn.vmStateSize > 0xffffffffn || (sn.diskSize ?? m.size) !== m.size)) return done(['Internal snapshots prevent downgrade of image']);
  const incompatible = m.incompatible & ~INCOMPAT.compression;
  if (incompatible) return done([`Cannot downgrade an image with incompatible features 0x${incompatible.toString(16)} set`]);
  const tables = [{ offset: h.l1TableOffset, size: h.l1Size }, ...list.map((sn) => ({ offset: sn.l1Offset, size: sn.l1Size }))];
  // Bounded: every table within qemu's L1 limit, and each L2 table read once however often named.
  if (tables.some((t) => t.size > MAX_L1_BYTES / 8 || t.offset % BigInt(h.clusterSize) !== 0n)) return refused('a snapshot L1 table is invalid');
  let expansion: RepairStep[];
  try {
    expansion = planExpandZeroClusters(dev, h, tables, h.backingFileOffset !== 0n, progress, hint);
  } catch (e) {
    if (e instanceof PlanRefusal) return refusedBy(e);
    throw e;
  }
  if (m.incompatible & INCOMPAT.compression) {
    if (hasCompressedClusters(dev, h)) return done(['Cannot downgrade an image with zstd compression type and existing compressed clusters'], expansion);
    m.incompatible &= ~INCOMPAT.compression;
    m.compressionType = 0;
  }
  m.compatible = 0n;
  m.autoclear = 0n;
  m.version = 2;
  return done(undefined, expansion);
}

const L1E_OFFSET_MASK = 0x00fffffffffffe00n;
const COMPRESSED = 1n << 62n;

function l2Entries(dev: BlockDevice, offset: bigint, clusterSize: number): bigint[] {
  const table = readAt(dev, offset, clusterSize);
  const entries: bigint[] = [];
  for (let at = 0; at < clusterSize; at += 8) entries.push(table.readBigUInt64BE(at));
  return entries;
}

/** Whether the active disk has compressed clusters (qemu walks the guest offsets below its size). */
function hasCompressedClusters(dev: BlockDevice, h: Qcow2Header): boolean {
  const perL2 = h.clusterSize / 8;
  const clusters = Number((h.size / 512n * 512n + BigInt(h.clusterSize) - 1n) / BigInt(h.clusterSize));
  const l1 = readAt(dev, h.l1TableOffset, h.l1Size * 8);
  const seen = new Set<bigint>();
  for (let i = 0; i * perL2 < clusters && i < h.l1Size; i++) {
    const l2 = l1.readBigUInt64BE(i * 8) & L1E_OFFSET_MASK;
    if (l2 === 0n || seen.has(l2)) continue;
    seen.add(l2);
    const entries = l2Entries(dev, l2, h.clusterSize).slice(0, clusters - i * perL2);
    if (entries.some((e) => (e & COMPRESSED) !== 0n)) return true;
  }
  return false;
}

/** The write that makes the first cluster `m`'s, none when it already is (or qemu's ENOSPC). */
function headerSteps(dev: BlockDevice, m: Qcow2HeaderModel): RepairStep[] {
  const write = planHeaderWrite(m);
  if ('errno' in write) throw new ImageError('Failed to update the image header: No space left on device');
  const bytes = (write.steps[0] as Extract<RepairStep, { kind: 'write' }>).bytes;
  return readAt(dev, 0, bytes.length).equals(bytes) ? [] : write.steps;
}

/** The header rewrite of qemu's read-write open (unknown autoclear bits cleared, a stale bitmaps extension dropped), if it makes one. */
export function openRewrite(dev: BlockDevice, h: Qcow2Header, m: Qcow2HeaderModel): RepairStep[] {
  return h.autoclear !== m.autoclear || m.staleBitmaps ? headerSteps(dev, m) : [];
}

export const qcow2Amend: AmendCapability = {
  options: QCOW2_AMEND,
  plan,
};
