// What qemu's parallels_open decides about an image it opens read-write (not for check -r):
// qemu 7.2 refuses one marked in use; qemu 8.2+ instead runs its check in fix-all mode when the
// image is marked in use, its data_off is wrong, a cluster reaches past the file, or the map of
// used host clusters cannot be filled (a cluster named twice, or one before the data area).
// Both close the image by cutting the file at the data's end: a leaked tail goes at any open.
import type { BlockDevice } from '../types.ts';
import { readAt } from '../bytes.ts';
import { parseParallelsHeader, type ParallelsHeader } from './driver.ts';

const HEADER_SIZE = 64;
const SECTOR = 512;
const INUSE_AT = 44;
const DATA_OFF_AT = 48;
const INUSE_MAGIC = 0x746f6e59;
const CHUNK = 64 * 1024;

/**
 * The open's verdict: `check` (8.2+ repairs first), `unclean` (7.2 refuses), `trim` (nothing to
 * repair, but the close cuts the file to `size`), else undefined.
 */
export type OpenVerdict = { kind: 'check' } | { kind: 'unclean' } | { kind: 'trim'; size: number } | undefined;

/** The message qemu 7.2's read-write open fails with on an image marked in use. */
export const UNCLEAN_OPEN = 'parallels: Image was not closed correctly; cannot be opened read/write';

/**
 * The smallest data_off qemu 8.1+ accepts, in sectors: the BAT's end, rounded up to a cluster for
 * the new magic. qemu's ROUND_UP masks with -tracks (uint32), right for powers of two only: a
 * cluster of 6 sectors rounds 4 up to 8, so qemu calls create's own data_off of such an image wrong.
 */
export function minDataOff(h: ParallelsHeader, oldMagic: boolean): number {
  const min = Math.ceil((HEADER_SIZE + 4 * h.batEntries) / SECTOR);
  return oldMagic ? min : ((min + h.tracks - 1) & -h.tracks) >>> 0;
}

/** qemu's parallels_test_data_off: whether data_off is right, and where the data starts (sectors). */
export function testDataOff(h: ParallelsHeader, oldMagic: boolean, dataOff: number, fileSectors: number): { ok: boolean; start: number } {
  const min = minDataOff(h, oldMagic);
  if (dataOff === 0 && oldMagic) return { ok: true, start: min };
  if (dataOff < min || dataOff > fileSectors) return { ok: false, start: min };
  return { ok: true, start: dataOff };
}

/** Calls fn(entry) for every BAT entry (as stored), reading the table in chunks. */
function eachEntry(dev: BlockDevice, h: ParallelsHeader, fn: (entry: number) => void): void {
  for (let first = 0; first < h.batEntries; first += CHUNK) {
    const n = Math.min(CHUNK, h.batEntries - first);
    const chunk = readAt(dev, HEADER_SIZE + first * 4, n * 4);
    for (let i = 0; i < n; i++) fn(chunk.readUInt32LE(i * 4));
  }
}

/** parallels_fill_used_bitmap's failure: a cluster before the data, past the file, or named twice. */
function usedMapFails(dev: BlockDevice, h: ParallelsHeader, start: number): boolean {
  const cluster = h.tracks * SECTOR;
  const payload = dev.size - start * SECTOR;
  if (payload < 0) return true;
  const bits = Math.ceil(payload / cluster);
  if (bits === 0) return false;
  const used = new Uint8Array(Math.ceil(bits / 8));
  let failed = false;
  eachEntry(dev, h, (entry) => {
    if (entry === 0 || failed) return;
    // qemu divides the signed distance (truncating toward zero) and keeps it as a uint32.
    const index = Math.trunc((entry * h.offMultiplier * SECTOR - start * SECTOR) / cluster) >>> 0;
    if (index + 1 > bits || used[index >> 3] & (1 << (index & 7))) failed = true;
    else used[index >> 3] |= 1 << (index & 7);
  });
  return failed;
}

/** What a read-write open of this parallels image does first, under qemu `major.minor`. */
export function parallelsOpenVerdict(dev: BlockDevice, major: number, minor: number): OpenVerdict {
  if (dev.size < HEADER_SIZE) return undefined;
  const raw = readAt(dev, 0, HEADER_SIZE);
  let h: ParallelsHeader;
  try {
    h = parseParallelsHeader(raw);
  } catch {
    return undefined; // the open itself fails, in the op's own words
  }
  const unclean = raw.readUInt32LE(INUSE_AT) === INUSE_MAGIC;
  const repairs = major > 8 || (major === 8 && minor >= 2);
  if (unclean) return { kind: repairs ? 'check' : 'unclean' };
  const fileSectors = Math.ceil(dev.size / SECTOR);
  const oldMagic = raw.toString('latin1', 0, 16) === 'WithoutFreeSpace';
  const { ok, start } = testDataOff(h, oldMagic, raw.readUInt32LE(DATA_OFF_AT), fileSectors);
  // qemu 7.2 takes any data_off; instar trims only where both versions agree on the data's end.
  if (!ok) return repairs ? { kind: 'check' } : undefined;
  let dataEnd = start;
  eachEntry(dev, h, (entry) => {
    dataEnd = Math.max(dataEnd, entry * h.offMultiplier + h.tracks);
  });
  if (dataEnd > fileSectors) return repairs ? { kind: 'check' } : undefined;
  if (repairs && usedMapFails(dev, h, start)) return { kind: 'check' };
  return dev.size > dataEnd * SECTOR ? { kind: 'trim', size: dataEnd * SECTOR } : undefined;
}
