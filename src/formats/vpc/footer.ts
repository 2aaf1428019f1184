// The VHD footer ("hard disk footer"): 512 big-endian bytes at the end of every VHD and, for
// dynamic and differencing disks, copied at offset 0. Offsets are from the VHD specification.
import { ImageError, type BlockDevice } from '../types.ts';
import { readZeroFilled, errnoError, qemuFileLength } from './file-read.ts';

export const FOOTER_SIZE = 512;
export const VHD_FIXED = 2;
/** qemu's VHD_MAX_SECTORS: 2040 GiB in 512-byte sectors. */
const VHD_MAX_SECTORS = 0xff00_0000n;
/** qemu's VHD_MAX_GEOMETRY: the largest CHS product, 65535 * 16 * 255. */
const VHD_MAX_GEOMETRY = 65535n * 16n * 255n;

export interface Footer {
  /** Whether the footer copy at offset 0 was found (qemu then parses a dynamic header). */
  atStart: boolean;
  dataOffset: bigint;
  creatorApp: Uint8Array;
  currentSize: bigint;
  cylinders: number;
  heads: number;
  sectorsPerTrack: number;
  diskType: number;
}

const CONECTIX = new TextEncoder().encode('conectix');

function hasCookie(b: Uint8Array): boolean {
  for (let i = 0; i < 8; i++) if (b[i] !== CONECTIX[i]) return false;
  return true;
}

/** qemu's vpc_checksum over the footer with its checksum field zeroed. */
function footerChecksumOk(b: Uint8Array): boolean {
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const stored = view.getUint32(64);
  let sum = 0;
  for (let i = 0; i < FOOTER_SIZE; i++) if (i < 64 || i >= 68) sum += b[i];
  return (~sum >>> 0) === stored;
}

/** Finds the footer as qemu's vpc_open does: offset 0 first, else the last 512 bytes. */
export function readFooter(dev: BlockDevice): Footer {
  const b = new Uint8Array(FOOTER_SIZE);
  readZeroFilled(dev, b, 0);
  let atStart = true;
  if (!hasCookie(b)) {
    // qemu measures the file in whole sectors, so a ragged tail is read zero-padded.
    const length = qemuFileLength(dev);
    if (length < FOOTER_SIZE) throw new ImageError('File too small for a VHD header');
    readZeroFilled(dev, b, length - FOOTER_SIZE);
    const type = new DataView(b.buffer).getUint32(60);
    if (!hasCookie(b) || type !== VHD_FIXED) throw new ImageError('invalid VPC image');
    atStart = false;
  }
  if (!footerChecksumOk(b)) throw new ImageError('Incorrect header checksum');
  const view = new DataView(b.buffer);
  return {
    atStart,
    dataOffset: view.getBigUint64(16),
    creatorApp: b.slice(28, 32),
    currentSize: view.getBigUint64(48),
    cylinders: view.getUint16(56),
    heads: b[58],
    sectorsPerTrack: b[59],
    diskType: view.getUint32(60),
  };
}

function appIs(app: Uint8Array, name: string): boolean {
  for (let i = 0; i < 4; i++) if (app[i] !== name.charCodeAt(i)) return false;
  return true;
}

/**
 * Whether qemu sizes the disk by its CHS geometry rather than by current_size.
 * Before 10.0 a list of creators that mean current_size (Hyper-V, qemu's force_size "qem2",
 * disk2vhd, XenServer, XenConverter) and CHS for everyone else; from 10.0 CHS only for
 * Virtual PC and old qemu, current_size for everyone else (Azure's "wa\0\0" among them).
 */
function usesChs(app: Uint8Array, currentSizeRule: boolean): boolean {
  if (currentSizeRule) return appIs(app, 'vpc ') || appIs(app, 'qemu');
  return !['win ', 'qem2', 'd2v ', 'CTXS', 'tap\0'].some((name) => appIs(app, name));
}

/** The virtual size in 512-byte sectors, as qemu computes bs->total_sectors. */
export function totalSectors(f: Footer, currentSizeRule: boolean): bigint {
  let sectors = BigInt(f.cylinders) * BigInt(f.heads) * BigInt(f.sectorsPerTrack);
  // A maximal geometry cannot describe the disk, so the stored size wins whatever the creator.
  if (!usesChs(f.creatorApp, currentSizeRule) || sectors === VHD_MAX_GEOMETRY) sectors = f.currentSize / 512n;
  if (sectors > VHD_MAX_SECTORS) throw errnoError('EFBIG');
  return sectors;
}
