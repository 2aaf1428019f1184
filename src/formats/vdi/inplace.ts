// convert -n into an existing VDI, as qemu's vdi driver writes into one: a block the map has is
// written in place; a new one is allocated after the blocks the header counts, written whole
// (zeros around the request), and the map entry and the header's count follow it
// (block-map-writer.ts). Targets whose map does not agree with that count, or that have
// discarded blocks, are refused.
import { BlockMapWriter } from '../block-map-writer.ts';
import { readAt } from '../bytes.ts';
import type { BlockDevice, ImageWriter } from '../types.ts';
import { parseVdiHeader } from './driver.ts';

const BLOCK_SIZE = 1024 * 1024;
const UNALLOCATED = 0xffff_ffff;
const DISCARDED = 0xffff_fffe;
const BLOCKS_ALLOCATED_AT = 0x184;
/** The map instar keeps in memory for one copy (a 64 TiB disk's). */
const MAP_LIMIT = 256 * 1024 * 1024;

export function vdiInPlaceWriter(dev: BlockDevice): ImageWriter | { refused: string } {
  const raw = readAt(dev, 0, 512);
  const header = parseVdiHeader(raw);
  const refused = (why: string) => ({ refused: `instar cannot convert into this vdi image (${why}); nothing was written` });
  if (header.diskSize % 512n !== 0n) return refused('its disk size is not a whole number of sectors');
  const used = Math.ceil(Number(header.diskSize) / BLOCK_SIZE);
  if (used * 4 > MAP_LIMIT) return refused('its block map is too large');
  const map = Buffer.from(readAt(dev, header.offsetBmap, used * 4));
  const allocated = raw.readUInt32LE(BLOCKS_ALLOCATED_AT);
  for (let i = 0; i < used; i++) {
    const entry = map.readUInt32LE(i * 4);
    if (entry === DISCARDED) return refused('it has discarded blocks');
    if (entry !== UNALLOCATED && entry >= allocated) return refused('its block map points past the blocks its header counts');
  }
  return new BlockMapWriter(dev, {
    format: 'VDI',
    diskSize: Number(header.diskSize),
    blockSize: BLOCK_SIZE,
    mapOffset: header.offsetBmap,
    map,
    unallocated: UNALLOCATED,
    firstEntry: 0,
    dataBase: header.offsetData,
    allocatedCountAt: BLOCKS_ALLOCATED_AT,
    allocated,
  });
}
