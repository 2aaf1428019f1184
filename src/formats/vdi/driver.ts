// qemu's "vdi" format: VirtualBox disk images (dynamic and static), read as qemu's block/vdi.c
// reads them. The header is checked in qemu's order with qemu's wording; the block map (qemu
// loads up to 2 GiB of it) is paged in on demand, only as far as the disk size reaches.
import { ImageError, type BlockDevice, type Driver, type Extent, type Image, type NodeInfo, type OpenContext } from '../types.ts';
import { readAt } from '../bytes.ts';
import { probes } from '../probe-only.ts';
import { openingAs } from '../vpc/file-read.ts';
import { PagedTable } from '../qcow/paged-table.ts';
import { fileRun } from '../raw/holes.ts';
import { vdiCreate } from './create.ts';
import { vdiWriter } from './writer.ts';

const SIGNATURE = 0xbeda107f;
const STATIC = 2;
const VERSION_1_1 = 0x00010001;
const SECTOR = 512;
const BLOCK_SIZE = 1024 * 1024;
/** qemu: as many map entries as one request can read (BDRV_REQUEST_MAX_BYTES / 4). */
const BLOCKS_MAX = 0x7ffffe00 / 4;
const DISK_SIZE_MAX = BigInt(BLOCKS_MAX) * BigInt(BLOCK_SIZE);
/** Block map entries at or above this are holes (0xfffffffe: discarded, 0xffffffff: never written). */
const DISCARDED = 0xfffffffe;
const HEADER_SIZE = 512;

export interface VdiHeader {
  imageType: number;
  offsetBmap: number;
  offsetData: number;
  diskSize: bigint;
  blocksInImage: number;
}

const hex = (v: number | bigint, width = 0): string => v.toString(16).padStart(width, '0');

function isNull(b: Buffer): boolean {
  return b.every((x) => x === 0);
}

/** vdi_open's header checks, same order and wording. */
export function parseVdiHeader(h: Buffer): VdiHeader {
  const signature = h.readUInt32LE(0x40);
  const version = h.readUInt32LE(0x44);
  const offsetBmap = h.readUInt32LE(0x154);
  const offsetData = h.readUInt32LE(0x158);
  const sectorSize = h.readUInt32LE(0x168);
  let diskSize = h.readBigUInt64LE(0x170);
  const blockSize = h.readUInt32LE(0x178);
  const blocksInImage = h.readUInt32LE(0x180);
  if (diskSize > DISK_SIZE_MAX) {
    throw new ImageError(`Unsupported VDI image size (size is 0x${hex(diskSize)}, max supported is 0x${hex(DISK_SIZE_MAX)})`);
  }
  // VBoxManage can write odd sizes; qemu rounds them up to whole sectors.
  diskSize = ((diskSize + BigInt(SECTOR - 1)) / BigInt(SECTOR)) * BigInt(SECTOR);
  const room = BigInt(blocksInImage) * BigInt(blockSize);
  let why = '';
  if (signature !== SIGNATURE) throw new ImageError(`Image not in VDI format (bad signature ${hex(signature, 8)})`);
  else if (version !== VERSION_1_1) why = `version ${Math.floor(version / 65536)}.${version % 65536}`;
  else if (offsetBmap % SECTOR !== 0) why = `unaligned block map offset 0x${hex(offsetBmap)}`;
  else if (offsetData % SECTOR !== 0) why = `unaligned data offset 0x${hex(offsetData)}`;
  else if (sectorSize !== SECTOR) why = `sector size ${sectorSize} is not ${SECTOR}`;
  else if (blockSize !== BLOCK_SIZE) why = `block size ${blockSize} is not ${BLOCK_SIZE}`;
  else if (diskSize > room) why = `disk size ${diskSize}, image bitmap has room for ${room}`;
  else if (!isNull(h.subarray(0x1a8, 0x1b8))) why = 'non-NULL link UUID';
  else if (!isNull(h.subarray(0x1b8, 0x1c8))) why = 'non-NULL parent UUID';
  else if (blocksInImage > BLOCKS_MAX) why = `too many blocks ${blocksInImage}, max is ${BLOCKS_MAX}`;
  if (why) throw new ImageError(`unsupported VDI image (${why})`);
  return { imageType: h.readUInt32LE(0x4c), offsetBmap, offsetData, diskSize, blocksInImage };
}

export class VdiImage implements Image {
  readonly format = 'vdi';
  readonly virtualSize: number;

  constructor(
    private readonly dev: BlockDevice,
    readonly header: VdiHeader,
    private readonly bmap: PagedTable,
  ) {
    this.virtualSize = Number(header.diskSize);
  }

  info(): NodeInfo {
    return { format: 'vdi', 'dirty-flag': false, 'virtual-size': this.virtualSize, 'cluster-size': BLOCK_SIZE };
  }

  /** Host offset of the byte at `offset`, or -1 in a hole (the map covers the whole disk). */
  private hostOffset(offset: number): number {
    const entry = this.bmap.u32(Math.floor(offset / BLOCK_SIZE));
    if (entry >= DISCARDED) return -1;
    return this.header.offsetData + entry * BLOCK_SIZE + (offset % BLOCK_SIZE);
  }

  read(buf: Uint8Array, offset: number): void {
    for (let done = 0; done < buf.length; ) {
      const pos = offset + done;
      const n = Math.min(buf.length - done, BLOCK_SIZE - (pos % BLOCK_SIZE));
      const part = buf.subarray(done, done + n);
      const host = pos < this.virtualSize ? this.hostOffset(pos) : -1;
      if (host < 0) part.fill(0);
      else part.set(readAt(this.dev, host, n)); // past the end of the file reads as zeros, as in qemu
      done += n;
    }
  }

  /** As vdi_co_block_status: one block at a time; a hole is known zero (vdi has no backing). */
  extent(offset: number, length: number): Extent {
    length = Math.min(length, this.virtualSize - offset);
    const n = Math.min(length, BLOCK_SIZE - (offset % BLOCK_SIZE));
    const host = this.hostOffset(offset);
    if (host >= 0) {
      if (this.header.imageType !== STATIC) return { offset, length: n, kind: 'data', depth: 0, hostOffset: host };
      // Static images: qemu asks the file system too, and a hole there is data reading as zeros.
      const run = fileRun(this.dev, host, n);
      return { offset, length: run.length, kind: 'data', depth: 0, hostOffset: host, zeroData: run.hole || undefined };
    }
    // Merge following holes within the loaded page of the map (qemu-img map merges them anyway).
    let covered = n;
    const end = this.bmap.pageEnd(Math.floor(offset / BLOCK_SIZE));
    for (let b = Math.floor(offset / BLOCK_SIZE) + 1; b < end && covered < length && this.bmap.u32(b) >= DISCARDED; b++) {
      covered += Math.min(length - covered, BLOCK_SIZE);
    }
    return { offset, length: covered, kind: 'zero', depth: 0 };
  }
}

export function openVdi(dev: BlockDevice, ctx: OpenContext): VdiImage {
  return openingAs(ctx.displayName, () => {
    const header = parseVdiHeader(readAt(dev, 0, HEADER_SIZE));
    // qemu loads the whole map (up to 4 GiB); only the entries the disk size reaches are used,
    // and they are read on demand.
    const used = Math.ceil(Number(header.diskSize) / BLOCK_SIZE);
    return new VdiImage(dev, header, new PagedTable(dev, BigInt(header.offsetBmap), used, 'u32le'));
  });
}

export const vdiDriver: Driver = {
  name: 'vdi',
  probe: probes.vdi,
  open: openVdi,
  create: vdiCreate,
  writer: vdiWriter,
};

