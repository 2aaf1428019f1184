// Writes guest data into a VMDK that create has just laid out (convert -O vmdk), extent by extent
// as qemu's vmdk driver does: sparse extents allocate whole grains in write order
// (writer-sparse.ts), streamOptimized compresses them, flat extents take the data in place.
//
// On the first data write qemu also rewrites the descriptor with a new random CID (vmdk_write_cid):
// measured with both oracles, it writes the text back over the descriptor's 20-sector area
// inside a sparse extent, and over a descriptor file's length rounded up to a sector (the file
// grows to it). instar keeps the CID create drew (random as well) and writes create's text
// again, over the same bytes; it reads nothing back (dd opens its output write-only).
import { ImageError, type BlockDevice, type CreatePlan, type ImageWriter, type WriterCapability, type WriterFiles } from '../types.ts';
import { descriptor, SPLIT_SIZE, type VmdkPlan } from './create.ts';
import { GRAIN, SparseExtentWriter, StreamExtentWriter, type ExtentWriter } from './writer-sparse.ts';
import { checkWriteRange, writableOutput } from '../writer-checks.ts';

const SECTOR = 512;
/** The descriptor area of a sparse extent (its header's desc_size, 20 sectors). */
const DESC_AREA = 20 * SECTOR;
/**
 * The unit qemu-img convert writes flat extents in with its default -S 4k (it skips 4 KiB blocks
 * of zeros, which stay holes). Callers skip zeros in the writer's unit; whatever reaches the
 * writer is written, as qemu's driver writes every request.
 */
const FLAT_WRITE_UNIT = 4096;

class FlatExtentWriter implements ExtentWriter {
  constructor(private readonly dev: BlockDevice) {
    writableOutput(dev);
  }

  write(data: Uint8Array, offset: number): void {
    this.dev.write!(data, offset);
  }

  finish(): void {}
}

interface Placed {
  start: number;
  bytes: number;
  writer: ExtentWriter;
}

class VmdkWriter implements ImageWriter {
  readonly clusterSize: number;
  private cidRewritten = false;

  constructor(
    /** Where the descriptor is, its text and the bytes the rewrite covers. */
    private readonly descriptor: { dev: BlockDevice; offset: number; text: Uint8Array; area: number },
    private readonly extents: Placed[],
    private readonly size: number,
    flat: boolean,
  ) {
    this.clusterSize = flat ? FLAT_WRITE_UNIT : GRAIN;
    // Flat extents report no cluster size, and qemu-img convert -c fails ("invalid cluster size").
    if (!flat) this.writeCompressed = (data, offset) => this.write(data, offset);
  }

  /**
   * -c: qemu's vmdk driver takes compressed writes for the subformats it gives a cluster size (not
   * the flat ones, see the constructor), but compresses only into a streamOptimized extent: a
   * sparse extent gets the grain as a plain write.
   */
  writeCompressed?: (data: Uint8Array, offset: number) => void;

  /** A streamOptimized extent (qemu's vmdk_get_info says so, and qemu-img then copies as with -c). */
  needsCompressedWrites = false;

  write(data: Uint8Array, offset: number): void {
    checkWriteRange(data, offset, this.size);
    if (data.length === 0) return;
    this.rewriteCid();
    for (const e of this.extents) {
      const from = Math.max(offset, e.start);
      const to = Math.min(offset + data.length, e.start + e.bytes);
      if (from < to) e.writer.write(data.subarray(from - offset, to - offset), from - e.start);
    }
  }

  /** vmdk_write_cid's write-back of the descriptor (the CID kept, see above). */
  private rewriteCid(): void {
    if (this.cidRewritten) return;
    this.cidRewritten = true;
    const { dev, offset, text, area } = this.descriptor;
    const bytes = new Uint8Array(area);
    bytes.set(text.subarray(0, area));
    dev.write!(bytes, offset);
  }

  finish(): void {
    for (const e of this.extents) e.writer.finish();
  }
}

export const vmdkWriter: WriterCapability = {
  open(files: WriterFiles, raw: CreatePlan): ImageWriter {
    const plan = raw as unknown as VmdkPlan;
    if (!files.image.write) throw new ImageError('the output was not opened for writing');
    const text = Buffer.from(descriptor(plan), 'latin1');
    if (plan.subformat === 'monolithicSparse' || plan.subformat === 'streamOptimized') {
      const writer = plan.subformat === 'streamOptimized' ? new StreamExtentWriter(files.image, plan.size) : new SparseExtentWriter(files.image, plan.size);
      const vmdk = new VmdkWriter({ dev: files.image, offset: SECTOR, text, area: DESC_AREA }, [{ start: 0, bytes: plan.size, writer }], plan.size, false);
      vmdk.needsCompressedWrites = plan.subformat === 'streamOptimized';
      return vmdk;
    }
    const flat = plan.subformat.endsWith('Flat');
    const extentBytes = plan.subformat.startsWith('twoGb') ? SPLIT_SIZE : plan.size;
    if (files.extents.length !== plan.extentFiles.length) throw new ImageError('the host did not grant the extent files to write');
    const extents = files.extents.map((dev, i): Placed => {
      const start = i * extentBytes;
      const bytes = Math.min(extentBytes, plan.size - start);
      return { start, bytes, writer: flat ? new FlatExtentWriter(dev) : new SparseExtentWriter(dev, bytes) };
    });
    const area = Math.ceil(text.length / SECTOR) * SECTOR;
    return new VmdkWriter({ dev: files.image, offset: 0, text, area }, extents, plan.size, flat);
  },
};
