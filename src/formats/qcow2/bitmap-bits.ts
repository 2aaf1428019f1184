// A dirty bitmap in memory as qemu's HBitmap serializes it: one bit per granule of the virtual
// disk, little-endian 64-bit words, cut into chunks of one qcow2 cluster each (the unit of the
// bitmap table). Only chunks holding a set bit are kept, so memory follows the dirty data, not
// the disk size.

export class DirtyBits {
  /** Bits in the bitmap: one per granule, the last granule possibly partial. */
  readonly bitCount: number;
  /** Bits one chunk (one cluster of serialized data) holds. */
  readonly bitsPerChunk: number;
  /** Chunks the bitmap table has (bitmap_table_size). */
  readonly chunkCount: number;
  private readonly chunks = new Map<number, Uint8Array>();

  constructor(readonly virtualSize: bigint, readonly granularityBits: number, readonly clusterSize: number) {
    const granularity = 2n ** BigInt(granularityBits);
    // Callers checked that the serialized bitmap stays within qemu's 512 MiB limit.
    this.bitCount = Number((virtualSize + granularity - 1n) / granularity);
    this.bitsPerChunk = clusterSize * 8;
    const bytes = Math.ceil(this.bitCount / 64) * 8;
    this.chunkCount = Math.ceil(bytes / clusterSize);
  }

  /** Serialized bytes of chunk `i` that carry bits (the rest of its cluster is zeros). */
  chunkBytes(i: number): number {
    const bits = Math.min(this.bitCount - i * this.bitsPerChunk, this.bitsPerChunk);
    return Math.ceil(bits / 64) * 8;
  }

  /** Indexes of the chunks with at least one bit set, ascending. */
  dirtyChunks(): number[] {
    return [...this.chunks.entries()].filter(([, c]) => c.some((b) => b !== 0)).map(([i]) => i).sort((a, b) => a - b);
  }

  /** Chunk `i` as a whole cluster (zeros when clean). */
  chunk(i: number): Uint8Array {
    const out = new Uint8Array(this.clusterSize);
    const c = this.chunks.get(i);
    if (c) out.set(c);
    return out;
  }

  /** Loads chunk `i` from a cluster read from the image; bits past the disk's end are dropped. */
  loadChunk(i: number, cluster: Uint8Array): void {
    const bytes = this.chunkBytes(i);
    const c = Uint8Array.from(cluster.subarray(0, bytes));
    const lastBits = this.bitCount - i * this.bitsPerChunk;
    if (lastBits < bytes * 8) clearFrom(c, lastBits);
    if (c.some((b) => b !== 0)) this.chunks.set(i, c);
  }

  /** A table entry with the all-ones flag: every bit of chunk `i` set. */
  fillChunk(i: number): void {
    const first = i * this.bitsPerChunk;
    this.setBits(first, Math.min(this.bitCount, first + this.bitsPerChunk));
  }

  clear(): void {
    this.chunks.clear();
  }

  /** bdrv_dirty_bitmap_truncate: the same bits over a disk of `virtualSize` (new granules clean). */
  truncated(virtualSize: bigint): DirtyBits {
    const out = new DirtyBits(virtualSize, this.granularityBits, this.clusterSize);
    for (const [i, c] of this.chunks) {
      if (i >= out.chunkCount) continue;
      const cluster = new Uint8Array(this.clusterSize);
      cluster.set(c);
      out.loadChunk(i, cluster);
    }
    return out;
  }

  /** bdrv_set_dirty: the granules that bytes [start, end) of the disk touch. */
  setByteRange(start: number, end: number): void {
    const g = 2 ** this.granularityBits;
    const last = Math.min(this.bitCount, Math.ceil(end / g));
    if (end > start && Math.floor(start / g) < last) this.setBits(Math.floor(start / g), last);
  }

  /** Sets bits [from, to). */
  setBits(from: number, to: number): void {
    let bit = from;
    while (bit < to) {
      const i = Math.floor(bit / this.bitsPerChunk);
      let c = this.chunks.get(i);
      if (!c) {
        c = new Uint8Array(this.chunkBytes(i));
        this.chunks.set(i, c);
      }
      const end = Math.min(to, (i + 1) * this.bitsPerChunk);
      let local = bit - i * this.bitsPerChunk;
      const localEnd = end - i * this.bitsPerChunk;
      while (local < localEnd) {
        if (local % 8 === 0 && localEnd - local >= 8) {
          const full = Math.floor((localEnd - local) / 8);
          c.fill(0xff, local / 8, local / 8 + full);
          local += full * 8;
        } else {
          c[local >> 3] |= 1 << (local & 7);
          local++;
        }
      }
      bit = end;
    }
  }

  /** Runs of set bits [start, end), ascending (what qemu's dirty iterator yields). */
  *runs(): Generator<[number, number]> {
    let runStart = -1;
    let runEnd = -1;
    for (const i of this.dirtyChunks()) {
      const c = this.chunks.get(i)!;
      const base = i * this.bitsPerChunk;
      for (let byte = 0; byte < c.length; byte++) {
        const v = c[byte];
        if (v === 0) continue;
        if (v === 0xff && base + byte * 8 === runEnd) {
          runEnd += 8;
          continue;
        }
        for (let b = 0; b < 8; b++) {
          if (!(v & (1 << b))) continue;
          const bit = base + byte * 8 + b;
          if (bit === runEnd) runEnd++;
          else {
            if (runStart >= 0) yield [runStart, runEnd];
            runStart = bit;
            runEnd = bit + 1;
          }
        }
      }
    }
    if (runStart >= 0) yield [runStart, runEnd];
  }

  /**
   * bdrv_merge_dirty_bitmap: every granule of `src` that is dirty makes the bytes it covers dirty
   * here, at this bitmap's granularity (the same sizes were checked by the caller).
   */
  mergeFrom(src: DirtyBits): void {
    if (src.granularityBits === this.granularityBits && src.clusterSize === this.clusterSize) {
      // Same granules: the serialized words OR together, chunk by chunk.
      for (const i of src.dirtyChunks()) {
        const from = src.chunks.get(i)!;
        const to = this.chunks.get(i);
        if (!to) this.chunks.set(i, Uint8Array.from(from));
        else from.forEach((v, at) => { to[at] |= v; });
      }
      return;
    }
    const sg = 2 ** src.granularityBits;
    const dg = 2 ** this.granularityBits;
    const size = Number(this.virtualSize);
    for (const [a, b] of src.runs()) {
      const start = a * sg;
      const end = Math.min(size, b * sg);
      if (end <= start) continue;
      this.setBits(Math.floor(start / dg), Math.floor((end - 1) / dg) + 1);
    }
  }
}

function clearFrom(c: Uint8Array, bit: number): void {
  for (let b = bit; b < c.length * 8; b++) c[b >> 3] &= ~(1 << (b & 7));
}
