// What qemu holds of a qcow2 header after opening the image read-write: the model that
// header-write.ts serializes. It mirrors qcow2_do_open's reading: the size rounded down to whole
// sectors, unknown autoclear bits dropped (qemu clears them on a writable open), header fields past
// its struct kept, names cut at their first NUL (qemu keeps them as C strings), the feature name
// table dropped (qemu writes its own), a stale bitmaps extension dropped, and unknown extensions
// kept in REVERSE order (qemu inserts each at the head of its list).
//
// Call it only on an image the driver opened: the driver has checked every field read here.
import { readAt } from '../bytes.ts';
import { AUTOCLEAR, type Qcow2Header } from './header.ts';
import { V3_HEADER_SIZE, type Qcow2HeaderModel } from './header-write.ts';
import { EXT } from './extensions.ts';
import type { BlockDevice } from '../types.ts';

const KNOWN_AUTOCLEAR = AUTOCLEAR.bitmaps | AUTOCLEAR.dataFileRaw;

/** Bytes up to the first NUL (C string semantics), as a copy. */
function cBytes(bytes: Uint8Array): Uint8Array {
  const nul = bytes.indexOf(0);
  return Uint8Array.from(nul < 0 ? bytes : bytes.subarray(0, nul));
}

/** qemu's words when any open finds a stale bitmaps extension (driver.ts warns with them; the second line has no newline). */
export const STALE_BITMAPS_WARNING = 'a program lacking bitmap support modified this file, so all bitmaps are now considered inconsistent';
/** The same warning for a version 2 image (qemu's words: amend's downgrade leaves such images). */
export const STALE_V2_BITMAPS_WARNING = 'This qcow2 v2 image contains bitmaps, but they may have been modified by a program without persistent bitmap support; so now they must all be considered inconsistent';
export const STALE_BITMAPS_TAIL = "Some clusters may be leaked, run 'qemu-img check -r' on the image file to fix.";

/** `loadedBitmaps`: the extension is the one qemu loaded at its open (a close after a downgrade to v2, which has no autoclear bits). */
export function readHeaderModel(dev: BlockDevice, h: Qcow2Header, opts: { loadedBitmaps?: boolean } = {}): Qcow2HeaderModel {
  const m: Qcow2HeaderModel = {
    version: h.version,
    clusterBits: h.clusterBits,
    size: (h.size / 512n) * 512n,
    cryptMethod: h.cryptMethod,
    l1Size: h.l1Size,
    l1TableOffset: h.l1TableOffset,
    refcountTableOffset: h.refcountTableOffset,
    refcountTableClusters: h.refcountTableClusters,
    nbSnapshots: h.nbSnapshots,
    snapshotsOffset: h.snapshotsOffset,
    incompatible: h.incompatible,
    compatible: h.compatible,
    autoclear: h.autoclear & KNOWN_AUTOCLEAR,
    refcountOrder: h.refcountOrder,
    compressionType: h.compressionType,
    unknownHeaderFields: h.version === 3 && h.headerLength > V3_HEADER_SIZE
      ? Uint8Array.from(readAt(dev, V3_HEADER_SIZE, h.headerLength - V3_HEADER_SIZE))
      : new Uint8Array(0),
    unknownExtensions: [],
  };
  // The walk the driver already validated (extensions.ts): records of 8-byte heads, padded data.
  let offset = h.headerLength;
  while (offset < h.extensionsEnd) {
    const head = readAt(dev, offset, 8);
    const magic = head.readUInt32BE(0);
    const len = head.readUInt32BE(4);
    offset += 8;
    if (magic === EXT.end) break;
    const data = Uint8Array.from(readAt(dev, offset, len));
    const view = Buffer.from(data);
    switch (magic) {
      case EXT.backingFormat:
        m.backingFormat = cBytes(data);
        break;
      case EXT.dataFile:
        m.dataFile = cBytes(data);
        break;
      case EXT.cryptoHeader:
        m.crypto = { offset: view.readBigUInt64BE(0), length: view.readBigUInt64BE(8) };
        break;
      case EXT.bitmaps:
        // Without the autoclear bit the directory is stale: qemu ignores it and does not write it back.
        if (h.autoclear & AUTOCLEAR.bitmaps || opts.loadedBitmaps === true) {
          m.bitmaps = { count: view.readUInt32BE(0), directorySize: view.readBigUInt64BE(8), directoryOffset: view.readBigUInt64BE(16) };
        } else m.staleBitmaps = true;
        break;
      case EXT.featureTable:
        break;
      default:
        m.unknownExtensions.unshift({ magic, data });
    }
    offset += Math.ceil(len / 8) * 8;
  }
  if (h.backingFileOffset !== 0n) m.backingFile = cBytes(readAt(dev, h.backingFileOffset, h.backingFileSize));
  return m;
}
