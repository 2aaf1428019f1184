// `rebase -u` for QED (qemu's bdrv_qed_change_backing_file): the 64-byte header with the backing
// feature bits set anew, the name right after it (offset 64, even with no name), and nothing else:
// qemu writes exactly header + name, leaving the rest of the header clusters as they were. QED
// keeps no format name; "raw" sets the no-probe bit instead.
//
// Crash safety: one write at offset 0 of at most the header clusters, which hold no table; a
// crash can only tear it, as it could tear qemu's own single write of the same bytes.
import { ImageError, type BlockDevice, type HeaderChangePlan } from '../types.ts';
import type { RepairStep } from '../repair.ts';
import { readAt } from '../bytes.ts';
import { F_BACKING_FILE, F_BACKING_FORMAT_NO_PROBE, F_NEED_CHECK, readQedHeader } from './header.ts';

const HEADER_BYTES = 64;

export function planQedChangeBacking(dev: BlockDevice, backing: Uint8Array | undefined, format: Uint8Array | undefined): HeaderChangePlan {
  const h = readQedHeader(dev);
  if (h.features & F_NEED_CHECK) {
    return { refused: 'instar cannot change the header of this qed image (it needs a check, which qemu would run and repair first); nothing was written' };
  }
  const header = readAt(dev, 0, HEADER_BYTES);
  // qemu's writable open clears every autoclear bit (it knows none) and writes the header back.
  const opened: RepairStep[] = [];
  if (header.readBigUInt64LE(32) !== 0n) {
    header.writeBigUInt64LE(0n, 32);
    opened.push({ kind: 'write', pos: 0, bytes: Uint8Array.from(header) }, { kind: 'barrier' });
  }
  // The block layer's rule first: a new backing file needs its format named.
  if (backing && !format) return { errno: 'EINVAL', steps: opened };
  // An unknown compatible feature may own the bytes after the header: qemu will not add a name.
  if (backing && header.readBigUInt64LE(24) !== 0n) return { errno: 'ENOTSUP', steps: opened };
  let features = h.features & ~(F_BACKING_FILE | F_BACKING_FORMAT_NO_PROBE);
  if (backing) {
    features |= F_BACKING_FILE;
    if (format && Buffer.from(format).equals(Buffer.from('raw'))) features |= F_BACKING_FORMAT_NO_PROBE;
  }
  const name = backing ?? new Uint8Array(0);
  if (HEADER_BYTES + name.length > h.headerSize * h.clusterSize) return { errno: 'ENOSPC', steps: opened };
  if (HEADER_BYTES + name.length > dev.size) throw new ImageError('instar refuses to write a qed header past the end of the file');
  header.writeBigUInt64LE(features, 16);
  header.writeUInt32LE(HEADER_BYTES, 56);
  header.writeUInt32LE(name.length, 60);
  return { steps: [{ kind: 'write', pos: 0, bytes: Buffer.concat([header, name]) }, { kind: 'barrier' }] };
}
