// A table of fixed-size entries stored in the image file (a VDI block map, a Parallels BAT, a
// qcow or QED L1/L2 table), read a page at a time on demand. qemu loads such tables whole; a
// hostile header can make them gigabytes long, so instar keeps only a bounded number of pages.
import type { BlockDevice } from '../types.ts';
import { readAt } from '../bytes.ts';

export type EntryKind = 'u32le' | 'u64le' | 'u64be';

const PAGE_BYTES = 64 * 1024;
const MAX_PAGES = 64; // 4 MiB of cached table per open table

export class PagedTable {
  private readonly width: number;
  private readonly perPage: number;
  private readonly pages = new Map<number, Buffer>();

  /** `offset` is validated by the caller (qemu's request limits); `count` entries follow it. */
  constructor(
    private readonly dev: BlockDevice,
    private readonly offset: bigint,
    readonly count: number,
    private readonly kind: EntryKind,
  ) {
    this.width = kind === 'u32le' ? 4 : 8;
    this.perPage = PAGE_BYTES / this.width;
  }

  private page(index: number): Buffer {
    const p = Math.floor(index / this.perPage);
    let page = this.pages.get(p);
    if (page) {
      // Refresh its place in the eviction order.
      this.pages.delete(p);
      this.pages.set(p, page);
      return page;
    }
    const first = p * this.perPage;
    const entries = Math.min(this.perPage, this.count - first);
    page = readAt(this.dev, this.offset + BigInt(first * this.width), entries * this.width);
    if (this.pages.size >= MAX_PAGES) this.pages.delete(this.pages.keys().next().value as number);
    this.pages.set(p, page);
    return page;
  }

  /** Entries of 32 bits. */
  u32(index: number): number {
    return this.page(index).readUInt32LE((index % this.perPage) * 4);
  }

  /** Entries of 64 bits. */
  u64(index: number): bigint {
    const at = (index % this.perPage) * 8;
    const page = this.page(index);
    return this.kind === 'u64be' ? page.readBigUInt64BE(at) : page.readBigUInt64LE(at);
  }

  /**
   * The first index at or after `index` whose entry is not zero, looking at most `maxPages`
   * pages ahead (it returns where it stopped then). Entries stored past the end of the file read
   * as zeros, so a hostile table far longer than the file is skipped without I/O.
   */
  zeroRunEnd(index: number, maxPages = 64): number {
    const stored = (BigInt(this.dev.size) - this.offset) / BigInt(this.width);
    let i = index;
    for (let pages = 0; i < this.count && pages < maxPages; pages++) {
      if (BigInt(i) >= stored) return this.count;
      const page = this.page(i);
      const end = this.pageEnd(i);
      for (let at = (i % this.perPage) * this.width; i < end; i++, at += this.width) {
        if (this.width === 4 ? page.readUInt32LE(at) !== 0 : page.readBigUInt64LE(at) !== 0n) return i;
      }
    }
    return Math.min(i, this.count);
  }

  /** Index of the last entry in the page holding `index` (scans stop there to stay bounded). */
  pageEnd(index: number): number {
    return Math.min(this.count, (Math.floor(index / this.perPage) + 1) * this.perPage);
  }
}
