// qemu's "cloop" format: compressed loopback images (V2.0), read as qemu's block/cloop.c reads
// them. A shell-script preamble, then at byte 128 the block size and block count (big-endian
// u32), then n_blocks + 1 big-endian u64 offsets; block i is the zlib stream between offsets i and
// i + 1 and must inflate to exactly one block. qemu has no block status for cloop: map says data.
import { inflateSync } from 'node:zlib';
import { ImageError, type BlockDevice, type Driver, type Extent, type Image, type NodeInfo, type OpenContext } from '../types.ts';
import { IoError, readAt } from '../bytes.ts';
import { probes } from '../probe-only.ts';
import { openingAs } from '../vpc/file-read.ts';

const SECTOR = 512;
const HEADER_AT = 128;
const OFFSETS_AT = HEADER_AT + 8;
/** qemu's MAX_BLOCK_SIZE: the largest uncompressed block it will buffer. */
const MAX_BLOCK_SIZE = 64 * 1024 * 1024;
/** qemu bounds n_blocks so that (n_blocks + 1) * 8 fits a uint32. */
const N_BLOCKS_MAX = Math.floor((0xffffffff - 1) / 8);
const OFFSETS_SIZE_MAX = 512 * 1024 * 1024;
/** Offsets are checked in chunks so a huge table never sits in memory twice. */
const CHUNK_ENTRIES = 65536;

export class CloopImage implements Image {
  readonly format = 'cloop';
  readonly virtualSize: number;
  private cached = -1;
  private block: Buffer = Buffer.alloc(0);

  constructor(
    private readonly dev: BlockDevice,
    readonly blockSize: number,
    /** The offsets stored in the file; entries past EOF read as zeros (as qemu's pread pads). */
    private readonly offsets: BigUint64Array,
    totalSectors: number,
  ) {
    this.virtualSize = totalSectors * SECTOR;
  }

  info(): NodeInfo {
    return { format: 'cloop', 'virtual-size': this.virtualSize };
  }

  private offset(i: number): bigint {
    return i < this.offsets.length ? this.offsets[i] : 0n;
  }

  /** cloop_read_block: the whole block inflated, or EIO for any stream that is not exactly one block. */
  private loadBlock(index: number): Buffer {
    if (index === this.cached) return this.block;
    const start = this.offset(index);
    // qemu keeps the compressed length in a uint32 (the open checks bound it to 128 MiB).
    const length = Number((this.offset(index + 1) - start) & 0xffffffffn);
    const input = readAt(this.dev, start, length);
    let out: Buffer;
    try {
      out = inflateSync(input, { maxOutputLength: this.blockSize });
    } catch {
      throw new IoError(); // corrupt, truncated or longer than a block
    }
    if (out.length !== this.blockSize) throw new IoError();
    this.cached = index;
    this.block = out;
    return out;
  }

  read(buf: Uint8Array, offset: number): void {
    for (let done = 0; done < buf.length; ) {
      const pos = offset + done;
      const index = Math.floor(pos / this.blockSize);
      const inBlock = pos % this.blockSize;
      const n = Math.min(buf.length - done, this.blockSize - inBlock);
      buf.set(this.loadBlock(index).subarray(inBlock, inBlock + n), done);
      done += n;
    }
  }

  extent(offset: number, length: number): Extent {
    return { offset, length: Math.min(length, this.virtualSize - offset), kind: 'data', depth: 0 };
  }
}

/** Reads and checks the offsets table as cloop_open does, holding only the part inside the file. */
function readOffsets(dev: BlockDevice, count: number): BigUint64Array {
  const inFile = Math.max(0, Math.min(count, Math.floor((dev.size - OFFSETS_AT) / 8)));
  const offsets = new BigUint64Array(inFile);
  let previous = 0n;
  for (let first = 0; first < inFile; first += CHUNK_ENTRIES) {
    const n = Math.min(CHUNK_ENTRIES, inFile - first);
    const raw = readAt(dev, OFFSETS_AT + first * 8, n * 8);
    for (let k = 0; k < n; k++) {
      const i = first + k;
      const value = raw.readBigUInt64BE(k * 8);
      offsets[i] = value;
      if (i > 0) checkStep(previous, value, i);
      previous = value;
    }
  }
  // A partial last entry reads with zero padding; every entry after it is zero.
  if (inFile < count) {
    const tail = readAt(dev, OFFSETS_AT + inFile * 8, 8).readBigUInt64BE(0);
    if (inFile > 0) checkStep(previous, tail, inFile);
    if (inFile + 1 < count && tail > 0n) checkStep(tail, 0n, inFile + 1);
    if (tail !== 0n) {
      const extended = new BigUint64Array(inFile + 1);
      extended.set(offsets);
      extended[inFile] = tail;
      return extended;
    }
  }
  return offsets;
}

function checkStep(previous: bigint, value: bigint, i: number): void {
  if (value < previous) throw new ImageError(`offsets not monotonically increasing at index ${i}, image file is corrupt`);
  if (value - previous > BigInt(2 * MAX_BLOCK_SIZE)) throw new ImageError(`invalid compressed block size at index ${i}, image file is corrupt`);
}

export function openCloop(dev: BlockDevice, ctx: OpenContext): CloopImage {
  return openingAs(ctx.displayName, () => {
    const header = readAt(dev, HEADER_AT, 8);
    const blockSize = header.readUInt32BE(0);
    if (blockSize % SECTOR !== 0) throw new ImageError(`block_size ${blockSize} must be a multiple of 512`);
    if (blockSize === 0) throw new ImageError('block_size cannot be zero');
    if (blockSize > MAX_BLOCK_SIZE) throw new ImageError(`block_size ${blockSize} must be ${MAX_BLOCK_SIZE / (1024 * 1024)} MB or less`);
    const nBlocks = header.readUInt32BE(4);
    if (nBlocks > N_BLOCKS_MAX) throw new ImageError(`n_blocks ${nBlocks} must be ${N_BLOCKS_MAX} or less`);
    if ((nBlocks + 1) * 8 > OFFSETS_SIZE_MAX) throw new ImageError('image requires too many offsets, try increasing block size');
    const offsets = readOffsets(dev, nBlocks + 1);
    // qemu multiplies two uint32s: the sector count wraps at 2^32.
    const totalSectors = Number((BigInt(nBlocks) * BigInt(blockSize / SECTOR)) % 2n ** 32n);
    return new CloopImage(dev, blockSize, offsets, totalSectors);
  });
}

export const cloopDriver: Driver = {
  name: 'cloop',
  probe: probes.cloop,
  open: openCloop,
};
