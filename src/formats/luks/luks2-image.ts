// A LUKS2 volume as an Image. qemu (7.2 and 10.0) refuses LUKS2 ("LUKS version 2 is not
// supported") and probes it as raw; instar reads it in default mode (docs/luks2.md) and reports
// it with the fields of qemu's LUKS1 info, filled from the JSON metadata where they map.
import { ImageError, type BlockDevice, type Extent, type Image, type NodeInfo, type OpenContext } from '../types.ts';
import { readPayload } from './payload.ts';
import { SectorCipher, type CipherSpec } from '../crypto/sector-cipher.ts';
import type { LuksInfo } from './header.ts';
import { readLuks2Header, type Luks2Header } from './luks2-header.ts';
import { parseEncryption, parseLuks2Metadata, type Luks2Metadata } from './luks2-metadata.ts';
import { unlockLuks2 } from './luks2-unlock.ts';

/** Bytes decrypted per batch. */

export interface Luks2Payload {
  spec: CipherSpec;
  key: Uint8Array;
  /** File offset of the first encrypted sector, the sector size, and sector 0's IV number and the IV step per sector. */
  offset: number;
  sectorSize: number;
  firstIv: number;
  ivPerSector: number;
  virtualSize: number;
}

/** qemu takes the secret as a C string: it ends at the first NUL byte. */
function cPassphrase(secret: Uint8Array): Uint8Array {
  const nul = secret.indexOf(0);
  return nul < 0 ? secret : secret.subarray(0, nul);
}

/** What qemu's LUKS1 info would say, from the LUKS2 metadata (see docs/luks2.md for the mapping). */
function luks2Info(hdr: Luks2Header, meta: Luks2Metadata, keyBytes: number): LuksInfo {
  const spec = parseEncryption(meta.segment.encryption, keyBytes, 'segment');
  return {
    'cipher-alg': spec.alg,
    'cipher-mode': spec.mode,
    'ivgen-alg': spec.ivgen,
    ...(spec.ivHash ? { 'ivgen-hash-alg': spec.ivHash } : {}),
    'hash-alg': meta.segmentDigest.hash,
    'detached-header': false,
    'payload-offset': meta.segment.offset,
    'master-key-iters': meta.segmentDigest.iterations,
    uuid: hdr.uuid,
    slots: meta.keyslots.map((s) => ({
      active: true,
      iters: s.kdf.type === 'pbkdf2' ? s.kdf.iterations : s.kdf.time,
      stripes: s.stripes,
      'key-offset': s.areaOffset,
    })),
  };
}

export class Luks2Image implements Image {
  readonly format = 'luks';
  readonly virtualSize: number;
  private readonly info_: LuksInfo;
  private readonly keyBytes: number;
  /** The IV number of the segment's first sector (iv_tweak) and the IV step per sector. */
  private readonly firstIv: number;
  private readonly ivPerSector: number;
  private cipher?: SectorCipher;
  /** The unlocked volume key and its cipher, for writes into the payload (luks2-inplace.ts). */
  private volume?: { spec: CipherSpec; key: Uint8Array };

  constructor(private dev: BlockDevice, ctx: OpenContext) {
    const hdr = readLuks2Header(dev);
    const meta = parseLuks2Metadata(hdr);
    const bound = meta.keyslots.filter((s) => meta.segmentDigest.keyslots.includes(s.id));
    if (bound.length === 0) throw new ImageError('LUKS2 metadata: no keyslot holds the volume key');
    this.keyBytes = bound[0].keySize;
    this.info_ = luks2Info(hdr, meta, this.keyBytes);
    const seg = meta.segment;
    if (seg.offset > dev.size) throw new ImageError(`LUKS2 segment starts at ${seg.offset}, past the end of the file (${dev.size} bytes)`);
    if (seg.size !== undefined && seg.offset + seg.size > dev.size) throw new ImageError(`LUKS2 segment ends at ${seg.offset + seg.size}, past the end of the file (${dev.size} bytes)`);
    const length = seg.size ?? dev.size - seg.offset;
    this.virtualSize = Math.floor(length / seg.sectorSize) * seg.sectorSize;
    // cryptsetup does not set dm-crypt's iv_large_sectors for LUKS2: IVs count 512-byte units
    // from iv_tweak, whatever the sector size (cryptsetup's own userspace reencryption agrees).
    if (seg.ivTweak > BigInt(Number.MAX_SAFE_INTEGER)) throw new ImageError('LUKS2 segment: iv_tweak is too large');
    this.ivPerSector = seg.sectorSize / 512;
    this.firstIv = Number(seg.ivTweak);
    if (ctx.key) {
      const key = unlockLuks2(dev, meta, cPassphrase(ctx.key));
      const spec = parseEncryption(seg.encryption, key.length, 'segment');
      this.cipher = new SectorCipher(spec, key, seg.sectorSize, this.ivPerSector);
      this.volume = { spec, key };
    } else if (ctx.keyRequired) {
      throw new ImageError("Parameter 'key-secret' is required for cipher");
    }
  }

  info(): NodeInfo {
    return {
      format: 'luks',
      'dirty-flag': false,
      'virtual-size': this.virtualSize,
      encrypted: true,
      'format-specific': { type: 'luks', data: { ...this.info_ } },
    };
  }

  read(buf: Uint8Array, offset: number): void {
    if (!this.cipher) throw new ImageError("Parameter 'key-secret' is required for cipher");
    const { cipher, firstIv, ivPerSector } = this;
    readPayload({ dev: this.dev, cipher, offset: this.info_['payload-offset'], virtualSize: this.virtualSize, ivOf: (sector) => firstIv + sector * ivPerSector }, buf, offset);
  }

  /** Where and how the payload is encrypted, once unlocked (undefined without a key). */
  payloadLayout(): Luks2Payload | undefined {
    if (!this.volume) return undefined;
    const { spec, key } = this.volume;
    return { spec, key, offset: this.info_['payload-offset'], sectorSize: this.cipher!.sectorSize, firstIv: this.firstIv, ivPerSector: this.ivPerSector, virtualSize: this.virtualSize };
  }

  extent(offset: number, length: number): Extent {
    return { offset, length: Math.min(length, this.virtualSize - offset), kind: 'data', depth: 0 };
  }
}
