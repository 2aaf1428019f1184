// qcow2 header extensions: the records between the header and the backing file name (or the end
// of the first cluster). Walked like qemu's qcow2_read_extensions so that errors come in its order.
import { ImageError, type BlockDevice } from '../types.ts';
import { readAt } from '../bytes.ts';
import { CRYPT, type Qcow2Header } from './header.ts';
import type { LuksInfo } from '../luks/header.ts';

export const EXT = {
  end: 0,
  backingFormat: 0xe2792aca,
  featureTable: 0x6803f857,
  cryptoHeader: 0x0537be77,
  bitmaps: 0x23852875,
  dataFile: 0x44415441,
} as const;

const MAX_BITMAPS = 65535;
/** QCOW2_MAX_BITMAP_DIRECTORY_SIZE */
export const MAX_BITMAP_DIRECTORY_SIZE = 1024 * MAX_BITMAPS;
/** sizeof(bs->backing_format) in qemu. */
const BACKING_FORMAT_BUF = 16;

export interface BitmapsExtension {
  count: number;
  directorySize: bigint;
  directoryOffset: bigint;
}

export interface Extensions {
  /** Raw bytes of the backing format name (NUL-terminated by the reader). */
  backingFormat?: Uint8Array;
  /** The last feature name table seen, padded with two empty entries as qemu does. */
  featureTable?: Uint8Array;
  crypto?: { offset: bigint; length: bigint };
  luks?: LuksInfo;
  bitmaps?: BitmapsExtension;
  dataFile?: Uint8Array;
  /** Set when the bitmaps extension is present but the autoclear bit says it is stale. */
  staleBitmaps?: boolean;
}

/**
 * Reads the extensions. With `lenient`, the walk stops silently at the first problem and returns
 * what it has (qemu does this when it only wants the feature table to name unknown bits).
 */
export function readExtensions(
  dev: BlockDevice,
  h: Qcow2Header,
  lenient: boolean,
  parseCrypto: (offset: bigint, length: bigint) => LuksInfo,
): Extensions {
  const ext: Extensions = {};
  const end = h.extensionsEnd;
  let offset = h.headerLength;
  const fail = (msg: string): Extensions => {
    if (lenient) return ext;
    throw new ImageError(msg);
  };
  // Each record advances by at least 8 bytes and `end` is at most one cluster (2 MiB): bounded.
  while (offset < end) {
    const head = readAt(dev, offset, 8);
    const magic = head.readUInt32BE(0);
    const len = head.readUInt32BE(4);
    offset += 8;
    if (offset > end || len > end - offset) return fail('Header extension too large');
    switch (magic) {
      case EXT.end:
        return ext;
      case EXT.backingFormat:
        if (len >= BACKING_FORMAT_BUF) {
          return fail(`ERROR: ext_backing_format: len=${len} too large (>=${BACKING_FORMAT_BUF})`);
        }
        ext.backingFormat = readAt(dev, offset, len);
        break;
      case EXT.featureTable:
        // Two zeroed 48-byte entries after the data end qemu's walk over the table.
        ext.featureTable = Buffer.concat([readAt(dev, offset, len), Buffer.alloc(96)]);
        break;
      case EXT.cryptoHeader: {
        if (h.cryptMethod !== CRYPT.luks) return fail('CRYPTO header extension only expected with LUKS encryption method');
        if (len !== 16) return fail(`CRYPTO header extension size ${len}, but expected size 16`);
        const c = readAt(dev, offset, 16);
        const cOffset = c.readBigUInt64BE(0);
        if (cOffset % BigInt(h.clusterSize) !== 0n) {
          return fail(`Encryption header offset '${cOffset}' is not a multiple of cluster size '${h.clusterSize}'`);
        }
        ext.crypto = { offset: cOffset, length: c.readBigUInt64BE(8) };
        // qemu opens the LUKS header right here, so its errors come before later extensions'.
        try {
          ext.luks = parseCrypto(ext.crypto.offset, ext.crypto.length);
        } catch (e) {
          if (lenient && e instanceof ImageError) return ext;
          throw e;
        }
        break;
      }
      case EXT.bitmaps: {
        if (len !== 24) return fail('bitmaps_ext: Invalid extension length');
        if ((h.autoclear & 1n) === 0n) {
          ext.staleBitmaps = true;
          break;
        }
        const bm = readAt(dev, offset, 24);
        if (bm.readUInt32BE(4) !== 0) return fail('bitmaps_ext: Reserved field is not zero');
        const count = bm.readUInt32BE(0);
        const directorySize = bm.readBigUInt64BE(8);
        const directoryOffset = bm.readBigUInt64BE(16);
        if (count > MAX_BITMAPS) {
          return fail(`bitmaps_ext: Image has ${count} bitmaps, exceeding the QEMU supported maximum of ${MAX_BITMAPS}`);
        }
        if (count === 0) return fail('found bitmaps extension with zero bitmaps');
        if (directoryOffset % BigInt(h.clusterSize) !== 0n) return fail('bitmaps_ext: invalid bitmap directory offset');
        if (directorySize > BigInt(MAX_BITMAP_DIRECTORY_SIZE)) {
          return fail(`bitmaps_ext: bitmap directory size (${directorySize}) exceeds the maximum supported size (${MAX_BITMAP_DIRECTORY_SIZE})`);
        }
        ext.bitmaps = { count, directorySize, directoryOffset };
        break;
      }
      case EXT.dataFile:
        ext.dataFile = readAt(dev, offset, len);
        break;
      default:
        break; // unknown extensions are skipped
    }
    offset += Math.ceil(len / 8) * 8;
  }
  return ext;
}
