// qemu's "qed" format (QEMU Enhanced Disk): an L1/L2 table of clusters over an optional backing
// file, read as qemu's block/qed.c reads it when opened read-only (no consistency check then).
import { ImageError, type BlockDevice, type Driver, type Extent, type Image, type NodeInfo, type OpenContext } from '../types.ts';
import { readAt } from '../bytes.ts';
import { probes } from '../probe-only.ts';
import { openingAs } from '../vpc/file-read.ts';
import { PagedTable } from '../qcow/paged-table.ts';
import { extentBelow, readFromBacking } from '../qcow/backing.ts';
import { qedResize } from './resize.ts';
import { readQedHeader, tableEntries, validClusterOffset, validTableOffset, type QedHeader } from './header.ts';
import { planQedChangeBacking } from './rebase-unsafe.ts';
import { planQedRebaseCopy } from './rebase-copy.ts';
import { qedCreate } from './create.ts';
import { qedWriter } from './writer.ts';

const ZERO_CLUSTER = 1n;
const L2_CACHE = 16;

/** qemu fails a lookup through a bad table or cluster offset with EINVAL. */
const einval = (): ImageError => new ImageError('Invalid argument', 'EINVAL');

/** A run of clusters of one kind from qed_find_cluster. */
interface Run {
  kind: 'data' | 'zero' | 'unallocated';
  length: number;
  host?: bigint;
}

export class QedImage implements Image {
  readonly format = 'qed';
  readonly virtualSize: number;
  private readonly entries: number;
  private readonly l1: PagedTable;
  private readonly l2Cache = new Map<bigint, PagedTable>();
  private backing?: Image;

  constructor(
    private readonly dev: BlockDevice,
    readonly h: QedHeader,
  ) {
    this.virtualSize = Number(h.imageSize);
    this.entries = tableEntries(h);
    this.l1 = new PagedTable(dev, h.l1Offset, this.entries, 'u64le');
  }

  attachBacking(backing: Image): void {
    this.backing = backing;
  }

  info(): NodeInfo {
    const info: NodeInfo = {
      format: 'qed',
      // qemu's get_info leaves is_dirty unset: the need-check bit never shows as dirty.
      'dirty-flag': false,
      'virtual-size': this.virtualSize,
      'cluster-size': this.h.clusterSize,
    };
    if (this.h.backingFile) {
      info['backing-filename'] = this.h.backingFile;
      if (this.h.backingFormat) info['backing-filename-format'] = this.h.backingFormat;
    }
    return info;
  }

  private l2(offset: bigint): PagedTable {
    let table = this.l2Cache.get(offset);
    if (!table) {
      if (this.l2Cache.size >= L2_CACHE) this.l2Cache.delete(this.l2Cache.keys().next().value as bigint);
      table = new PagedTable(this.dev, offset, this.entries, 'u64le');
      this.l2Cache.set(offset, table);
    }
    return table;
  }

  /** qemu's qed_find_cluster: a run within one L2 table, contiguous in the file when data. */
  private find(pos: number, length: number): Run {
    const cs = this.h.clusterSize;
    const l2Span = cs * this.entries;
    length = Math.min(length, l2Span - (pos % l2Span));
    const l1Index = Math.floor(pos / l2Span);
    // The 64-bit size check in the header can let the disk outgrow the L1 table; qemu would
    // read past its table there, instar refuses.
    if (l1Index >= this.entries) throw einval();
    const l2Offset = this.l1.u64(l1Index);
    if (l2Offset === 0n) return { kind: 'unallocated', length };
    if (!validTableOffset(this.h, l2Offset)) throw einval();
    const table = this.l2(l2Offset);
    const index = Math.floor(pos / cs) % this.entries;
    const inCluster = pos % cs;
    const wanted = Math.ceil((inCluster + length) / cs);
    const end = Math.min(index + wanted, this.entries, table.pageEnd(index));
    const first = table.u64(index);
    let last = first;
    let i = index + 1;
    for (; i < end; i++) {
      const e = table.u64(i);
      if (first === 0n || first === ZERO_CLUSTER) {
        if (e !== first) break;
      } else {
        if (e !== last + BigInt(cs)) break;
        last = e;
      }
    }
    length = Math.min(length, (i - index) * cs - inCluster);
    if (first === 0n) return { kind: 'unallocated', length };
    if (first === ZERO_CLUSTER) return { kind: 'zero', length };
    // Only the run's first cluster is checked, as in qemu.
    if (!validClusterOffset(this.h, first)) throw einval();
    return { kind: 'data', length, host: first + BigInt(inCluster) };
  }

  private checkReadable(): void {
    if (this.h.backingFile && !this.backing) throw new ImageError('reading qed images with a backing file needs the backing image attached');
  }

  read(buf: Uint8Array, offset: number): void {
    this.checkReadable();
    for (let done = 0; done < buf.length; ) {
      const pos = offset + done;
      if (pos >= this.virtualSize) {
        buf.fill(0, done);
        return;
      }
      const run = this.find(pos, Math.min(buf.length - done, this.virtualSize - pos));
      const part = buf.subarray(done, done + run.length);
      if (run.kind === 'zero') part.fill(0);
      else if (run.kind === 'unallocated') readFromBacking(this.backing, part, pos);
      else part.set(readAt(this.dev, run.host!, run.length)); // past EOF reads as zeros, as in qemu
      done += run.length;
    }
  }

  extent(offset: number, length: number): Extent {
    this.checkReadable();
    const run = this.find(offset, Math.min(length, this.virtualSize - offset));
    if (run.kind === 'data') return { offset, length: run.length, kind: 'data', depth: 0, hostOffset: Number(run.host) };
    if (run.kind === 'zero') return { offset, length: run.length, kind: 'zero', depth: 0 };
    return extentBelow(this.backing, { offset, length: run.length, kind: 'unallocated', depth: 0 });
  }
}

export function openQed(dev: BlockDevice, ctx: OpenContext): QedImage {
  return openingAs(ctx.displayName, () => new QedImage(dev, readQedHeader(dev)));
}

export const qedDriver: Driver = {
  name: 'qed',
  probe: probes.qed,
  open: openQed,
  changeBacking: planQedChangeBacking,
  rebaseCopy: planQedRebaseCopy,
  resize: qedResize,
  create: qedCreate,
  writer: qedWriter,
};
