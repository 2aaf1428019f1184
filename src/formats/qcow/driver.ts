// qemu's "qcow" format (version 1): a two-level table of clusters, optionally zlib-compressed,
// over an optional backing file. Read as qemu's block/qcow.c reads it.
import { inflateRawSync, constants as zlibConstants } from 'node:zlib';
import { ImageError, type BlockDevice, type Driver, type Extent, type Image, type NodeInfo, type OpenContext } from '../types.ts';
import { readAt, requestOk } from '../bytes.ts';
import { probes } from '../probe-only.ts';
import { openingAs } from '../vpc/file-read.ts';
import { PagedTable } from './paged-table.ts';
import { readQcowHeader, type QcowHeader } from './header.ts';
import { extentBelow, readFromBacking } from './backing.ts';
import { SectorCipher } from '../crypto/sector-cipher.ts';
import { keyRequired } from '../luks/driver.ts';
import { qcowCreate } from './create.ts';
import { qcowWriter } from './writer.ts';

const COMPRESSED = 1n << 63n;
const L2_CACHE = 16; // qemu's L2_CACHE_SIZE

const eio = (): ImageError => new ImageError('Input/output error', 'EIO');

/** Where a guest cluster lives: nowhere, compressed at `entry`, or at host offset `host`. */
type Cluster = { kind: 'hole' } | { kind: 'compressed'; entry: bigint } | { kind: 'data'; host: bigint };

export class QcowImage implements Image {
  readonly format = 'qcow';
  readonly virtualSize: number;
  private readonly clusterSize: number;
  private readonly l1: PagedTable;
  private readonly l2Cache = new Map<bigint, PagedTable>();
  private backing?: Image;
  private lastCompressed?: { entry: bigint; data: Buffer };
  /** AES-CBC with the guest sector number as IV (qemu's legacy qcow encryption), once keyed. */
  private readonly cipher?: SectorCipher;

  constructor(
    private readonly dev: BlockDevice,
    private readonly h: QcowHeader,
    ctx: OpenContext,
  ) {
    // qemu keeps whole sectors; the L1 bound keeps the size below 2^58, exact as a double.
    this.virtualSize = Number(h.size / 512n) * 512;
    this.clusterSize = 2 ** h.clusterBits;
    this.l1 = new PagedTable(dev, h.l1Offset, h.l1Size, 'u64be');
    if (h.cryptMethod !== 0) {
      if (ctx.key) {
        // qemu takes the secret as a C string and uses its first 16 bytes, zero-padded.
        const nul = ctx.key.indexOf(0);
        const key = Buffer.alloc(16);
        key.set((nul < 0 ? ctx.key : ctx.key.subarray(0, nul)).subarray(0, 16));
        this.cipher = new SectorCipher({ alg: 'aes-128', mode: 'cbc', ivgen: 'plain64' }, key, 512);
      } else if (ctx.keyRequired) {
        throw keyRequired('encrypt.key-secret');
      }
    }
  }

  attachBacking(backing: Image): void {
    this.backing = backing;
  }

  info(): NodeInfo {
    const info: NodeInfo = { format: 'qcow', 'dirty-flag': false, 'virtual-size': this.virtualSize, 'cluster-size': this.clusterSize };
    if (this.h.cryptMethod !== 0) info.encrypted = true;
    if (this.h.backingFile) info['backing-filename'] = this.h.backingFile;
    return info;
  }

  private checkReadable(): void {
    // qemu opens the cipher only when I/O is possible, so info works without a key and reads do not.
    // qemu opens the cipher only when I/O is possible, so info works without a key and reads do not.
    if (this.h.cryptMethod !== 0 && !this.cipher) throw keyRequired('encrypt.key-secret');
    if (this.h.backingFile && !this.backing) throw new ImageError('reading qcow images with a backing file needs the backing image attached');
  }

  /** qemu's get_cluster_offset without allocation. */
  private cluster(offset: number): Cluster {
    const l1Index = Math.floor(offset / 2 ** (this.h.clusterBits + this.h.l2Bits));
    const l2Offset = this.l1.u64(l1Index);
    if (l2Offset === 0n) return { kind: 'hole' };
    const entry = this.l2Table(l2Offset).u64(Math.floor(offset / this.clusterSize) % 2 ** this.h.l2Bits);
    if (entry === 0n) return { kind: 'hole' };
    if (entry & COMPRESSED) return { kind: 'compressed', entry };
    return { kind: 'data', host: entry };
  }

  /** The L2 table at `l2Offset`, from a small cache. */
  private l2Table(l2Offset: bigint): PagedTable {
    const l2Entries = 2 ** this.h.l2Bits;
    if (!requestOk(l2Offset, BigInt(l2Entries * 8))) throw eio();
    let l2 = this.l2Cache.get(l2Offset);
    if (!l2) {
      if (this.l2Cache.size >= L2_CACHE) this.l2Cache.delete(this.l2Cache.keys().next().value as bigint);
      l2 = new PagedTable(this.dev, l2Offset, l2Entries, 'u64be');
      this.l2Cache.set(l2Offset, l2);
    }
    return l2;
  }

  /** Whole sectors around `part` (clusters are whole sectors), decrypted by guest sector number. */
  private readDecrypted(part: Uint8Array, host: bigint, guest: number): void {
    const lead = guest % 512;
    const length = Math.ceil((lead + part.length) / 512) * 512;
    const sectors = readAt(this.dev, host - BigInt(lead), length);
    this.cipher!.decrypt(sectors, (guest - lead) / 512);
    part.set(sectors.subarray(lead, lead + part.length));
  }

  /** qemu's decompress_cluster: exactly one cluster of raw deflate (4 KiB window) or EIO. */
  private decompress(entry: bigint): Buffer {
    if (this.lastCompressed?.entry === entry) return this.lastCompressed.data;
    const bits = BigInt(63 - this.h.clusterBits);
    const csize = Number((entry >> bits) & BigInt(this.clusterSize - 1));
    const coffset = entry & ((1n << bits) - 1n);
    if (!requestOk(coffset, BigInt(csize))) throw eio();
    const input = readAt(this.dev, coffset, csize);
    const out = inflateCluster(input, this.clusterSize);
    this.lastCompressed = { entry, data: out };
    return out;
  }

  read(buf: Uint8Array, offset: number): void {
    this.checkReadable();
    for (let done = 0; done < buf.length; ) {
      const pos = offset + done;
      const inCluster = pos % this.clusterSize;
      const n = Math.min(buf.length - done, this.clusterSize - inCluster);
      const part = buf.subarray(done, done + n);
      const c = pos < this.virtualSize ? this.cluster(pos) : ({ kind: 'hole' } as Cluster);
      if (c.kind === 'hole') readFromBacking(this.backing, part, pos);
      else if (c.kind === 'compressed') part.set(this.decompress(c.entry).subarray(inCluster, inCluster + n));
      else {
        // qemu refuses a data cluster whose entry is not sector-aligned (block status still maps it).
        if (c.host % 512n !== 0n) throw eio();
        const at = c.host + BigInt(inCluster);
        if (!requestOk(at, BigInt(n))) throw eio();
        if (this.cipher) this.readDecrypted(part, at, pos);
        else part.set(readAt(this.dev, at, n)); // past the end of the file reads as zeros, as in qemu
      }
      done += n;
    }
  }

  /**
   * How far a hole that starts at `offset` (its first `first` bytes known) goes, up to `max`
   * bytes: qemu answers one cluster at a time and qemu-img map merges them; instar merges here,
   * skipping whole L2 spans where the L1 entry is empty. Bounded work per call.
   */
  private holeRun(offset: number, max: number, first: number): number {
    const l2Span = 2 ** (this.h.clusterBits + this.h.l2Bits);
    let covered = first;
    for (let steps = 0; covered < max && steps < 65536; steps++) {
      const pos = offset + covered;
      const l1Index = Math.floor(pos / l2Span);
      const l2Offset = this.l1.u64(l1Index);
      // Runs of empty L1 or L2 entries are one hole each, however long (a hostile L1 can cover petabytes).
      if (l2Offset === 0n) {
        covered = this.l1.zeroRunEnd(l1Index) * l2Span - offset;
        continue;
      }
      const l2Index = Math.floor((pos % l2Span) / this.clusterSize);
      let end: number;
      try {
        end = this.l2Table(l2Offset).zeroRunEnd(l2Index);
      } catch (e) {
        // A table that cannot be read ends the run here: qemu fails only when it gets there,
        // after qemu-img map has printed what came before.
        if (e instanceof ImageError) break;
        throw e;
      }
      if (end === l2Index) break;
      covered = l1Index * l2Span + end * this.clusterSize - offset;
    }
    return Math.min(covered, max);
  }

  /**
   * qcow_co_block_status answers one cluster at a time, holes too: compare -s sees each hole
   * cluster's status (an EOF flag only on the last one), not the merged run extent() gives.
   */
  get blockStatus(): number {
    return this.clusterSize;
  }

  /** As qcow_co_block_status: one cluster at a time (holes merged). */
  extent(offset: number, length: number): Extent {
    this.checkReadable();
    const inCluster = offset % this.clusterSize;
    const n = Math.min(length, this.virtualSize - offset, this.clusterSize - inCluster);
    const c = this.cluster(offset);
    if (c.kind === 'hole') return extentBelow(this.backing, { offset, length: this.holeRun(offset, Math.min(length, this.virtualSize - offset), n), kind: 'unallocated', depth: 0 });
    if (c.kind === 'compressed') return { offset, length: n, kind: 'data', depth: 0, compressed: true };
    // Encrypted data has no offset a reader could use (qemu-img map shows none).
    if (this.cipher) return { offset, length: n, kind: 'data', depth: 0 };
    // qemu ORs the in-cluster offset into the entry (an unaligned entry is the image's problem).
    const host = c.host | BigInt(inCluster);
    const e: Extent = { offset, length: n, kind: 'data', depth: 0, hostOffset: Number(host) };
    // An entry can hold any 63-bit offset; qemu-img map prints it exactly.
    if (!Number.isSafeInteger(e.hostOffset)) e.hostOffsetExact = host;
    return e;
  }
}

/**
 * qemu inflates into one cluster and accepts the result when the cluster is full, even if the
 * stream goes on; a short result is EIO. Node stops at maxOutputLength with an error and no
 * output, so a stream longer than a cluster is inflated again in full (deflate expands at most
 * 1032:1, and the input is below one 64 KiB cluster) and cut.
 */
function inflateCluster(input: Buffer, clusterSize: number): Buffer {
  const opts = { windowBits: 12, finishFlush: zlibConstants.Z_SYNC_FLUSH };
  let out: Buffer;
  try {
    out = inflateRawSync(input, { ...opts, maxOutputLength: clusterSize });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ERR_BUFFER_TOO_LARGE') throw eio();
    try {
      out = inflateRawSync(input, { ...opts, maxOutputLength: input.length * 1032 + clusterSize }).subarray(0, clusterSize);
    } catch {
      throw eio();
    }
  }
  if (out.length !== clusterSize) throw eio();
  return out;
}

export function openQcow(dev: BlockDevice, ctx: OpenContext): QcowImage {
  return openingAs(ctx.displayName, () => new QcowImage(dev, readQcowHeader(dev), ctx));
}

export const qcowDriver: Driver = {
  name: 'qcow',
  probe: probes.qcow,
  open: openQcow,
  create: qcowCreate,
  writer: qcowWriter,
};
