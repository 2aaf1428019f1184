// Format detection: qemu's bdrv_probe_all (every driver scores the first 2048 bytes, zero-padded,
// the highest wins) minus its dangerous fallback. qemu calls anything unrecognised "raw", which
// lets a guest-written disk that starts like another format's header be opened as that format
// later; instar refuses unknown content unless it carries a partition table (MBR or GPT), which
// makes it a whole-disk image, or the user asked for qemu's behaviour (--unsafe-quirks).
import { ImageError, type BlockDevice } from './types.ts';
import { drivers } from './registry.ts';
import { readAt } from './bytes.ts';
import { isIsoImage } from './iso/driver.ts';
import { isLuks2 } from './luks/luks2-header.ts';

export interface DetectOptions {
  unsafeQuirks: boolean;
  /** The image's name as given by the user (qemu's dmg probe looks only at the name). */
  fileName?: string;
}

/** qemu probes with a fixed 2048-byte buffer, zero-filled past the end of the file. */
export const PROBE_SIZE = 2048;

/** Picks the format by probe score; unknown content is refused unless unsafe quirks allow raw. */
export function detectFormat(dev: BlockDevice, opts: DetectOptions): string {
  if (dev.size === 0) return 'raw'; // qemu: an empty file is raw; nothing in it can mislead
  const head = readAt(dev, 0, PROBE_SIZE);
  let best = { name: '', score: 0 };
  for (const d of drivers) {
    if (d.name === 'raw') continue;
    const score = d.probe(head, opts.fileName);
    if (score > best.score) best = { name: d.name, score };
  }
  if (best.score > 0) return best.name;
  // LUKS2: qemu's luks probe takes version 1 only (raw otherwise); instar reads v2 (docs/luks2.md).
  if (!opts.unsafeQuirks && isLuks2(head)) return 'luks';
  if (opts.unsafeQuirks) return 'raw';
  // ISO 9660 / UDF (also hybrid ones with an MBR): read as raw, but named for what they are.
  if (isIsoImage(dev)) return 'iso';
  if (hasPartitionTable(dev, head)) return 'raw';
  throw new ImageError(`Could not determine image format: ${whyUnknown(dev, head)} ${NO_RAW_FALLBACK}`);
}

/** The end of detect's refusal of a file qemu would probe as raw (checked by isRawFallbackRefusal). */
const NO_RAW_FALLBACK = '(instar does not fall back to raw; use -f raw or --unsafe-quirks)';

/** Whether `e` is detect's refusal of a file that qemu's probe would have opened as raw. */
export const isRawFallbackRefusal = (e: unknown): boolean => e instanceof ImageError && e.message.endsWith(NO_RAW_FALLBACK);

/** An MBR with plausible partition entries, or a GPT header (512- or 4096-byte sectors). */
export function hasPartitionTable(dev: BlockDevice, head: Buffer): boolean {
  if (head.toString('latin1', 512, 520) === 'EFI PART') return true;
  if (readAt(dev, 4096, 8).toString('latin1') === 'EFI PART') return true;
  if (head[510] !== 0x55 || head[511] !== 0xaa) return false;
  let used = 0;
  for (let i = 0; i < 4; i++) {
    const e = 446 + i * 16;
    const status = head[e];
    if (status !== 0x00 && status !== 0x80) return false;
    const type = head[e + 4];
    const start = head.readUInt32LE(e + 8);
    const sectors = head.readUInt32LE(e + 12);
    if (type === 0) continue;
    if (start === 0 || sectors === 0) return false;
    used++;
  }
  return used > 0;
}

/** Names what the content looks like, for the refusal message. */
function whyUnknown(dev: BlockDevice, head: Buffer): string {
  if (head.subarray(0, 6).equals(Buffer.from('LUKS\xba\xbe', 'latin1'))) {
    return `LUKS version ${head.readUInt16BE(6)} is not supported`;
  }
  if (dev.size >= 512 && readAt(dev, dev.size - 512, 8).toString('latin1') === 'conectix') {
    return 'this looks like a fixed-size VHD (use -f vpc)';
  }
  if (dev.size >= 512 && readAt(dev, dev.size - 512, 4).toString('latin1') === 'koly') {
    return 'this looks like a DMG image (use -f dmg)';
  }
  return 'not a known disk image format';
}
