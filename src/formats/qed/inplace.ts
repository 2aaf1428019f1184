// convert -n into an existing QED image, as qemu's qed driver writes into one: the writer
// (writer.ts) starts from the image's L1 and L2 tables and its file size, so new clusters and
// tables go where qemu's allocator puts them, zeros become zero clusters (or are written in place
// over allocated ones), and the tables are written at the end. The header is marked need-check
// before the first write and the mark cleared after the tables (qemu's own order: a crash in
// between leaves an image qemu opens and repairs). Images with a backing file or marked already
// are refused.
import { ImageError, type BlockDevice, type ImageWriter } from '../types.ts';
import { F_BACKING_FILE, F_NEED_CHECK, readQedHeader } from './header.ts';
import { readQedTables } from './tables.ts';
import { QedWriter } from './writer.ts';

const FEATURES_AT = 16;

/** Marks the header need-check around the writes: set before the first, cleared after finish(). */
class MarkedWriter implements ImageWriter {
  readonly clusterSize: number;
  private marked = false;

  constructor(private readonly dev: BlockDevice, private readonly inner: QedWriter, private readonly features: bigint) {
    this.clusterSize = inner.clusterSize;
  }

  private setFeatures(value: bigint): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(value);
    this.dev.write!(b, FEATURES_AT);
  }

  private mark(): void {
    if (!this.marked) this.setFeatures(this.features | F_NEED_CHECK);
    this.marked = true;
  }

  write(data: Uint8Array, offset: number): void {
    this.mark();
    this.inner.write(data, offset);
  }

  writeZeroes(offset: number, length: number): void {
    this.mark();
    this.inner.writeZeroes(offset, length);
  }

  finish(): void {
    this.inner.finish();
    if (this.marked) this.setFeatures(this.features);
  }
}

export function qedInPlaceWriter(dev: BlockDevice): ImageWriter | { refused: string } {
  const refused = (why: string) => ({ refused: `instar cannot convert into this qed image (${why}); nothing was written` });
  if (!dev.write) throw new ImageError('the host did not grant the target for writing');
  const h = readQedHeader(dev);
  if (h.features & F_NEED_CHECK) return refused('it is marked as needing a check');
  if (h.features & F_BACKING_FILE) return refused('it has a backing file');
  const state = readQedTables(dev, h);
  if ('problem' in state) return refused(state.problem);
  const plan = { size: Number(h.imageSize), clusterSize: h.clusterSize, tableSize: h.tableSize };
  const writer = new QedWriter({ image: dev, extents: [] }, plan, state);
  return new MarkedWriter(dev, writer, h.features);
}
