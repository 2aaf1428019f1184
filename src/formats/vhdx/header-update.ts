// qemu's VHDX header updates on a writable image (vhdx_update_header): the non-current header
// takes the current one's sequence number plus one, the session's file write GUID, a fresh data
// write GUID on request and a log GUID when given, and becomes current. qemu keeps each header's
// first 80 bytes as it read them, lays them over the 4 KiB on disk, checksums those 4 KiB and
// writes the 80 bytes. Updates come in pairs (vhdx_update_headers), so both headers agree.
import { randomBytes } from 'node:crypto';
import { readAt } from '../bytes.ts';
import type { BlockDevice } from '../types.ts';
import { crc32c } from './crc32c.ts';
import { HEADER_OFFSETS, HEADER_SIZE } from './headers.ts';

/** The fields qemu's VHDXHeader structure holds. */
const STRUCT_BYTES = 80;
const SEQUENCE = 8;
const FILE_WRITE_GUID = 16;
const DATA_WRITE_GUID = 32;
const LOG_GUID = 48;

/** A random (version 4) GUID, as qemu's vhdx_guid_generate draws one. */
export function randomGuid(): Uint8Array {
  const b = randomBytes(16);
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  return b;
}

export class HeaderPair {
  private readonly structs: [Buffer, Buffer];

  /** `raws`: both headers' sectors as read at open; `current`: the one qemu picked. */
  constructor(private readonly put: (buf: Uint8Array, pos: number) => void, private readonly dev: BlockDevice, raws: readonly [Uint8Array, Uint8Array], private current: 0 | 1, private readonly session: Uint8Array) {
    this.structs = [Buffer.from(raws[0].subarray(0, STRUCT_BYTES)), Buffer.from(raws[1].subarray(0, STRUCT_BYTES))];
  }

  private updateOne(dataGuid: (() => Uint8Array) | undefined, logGuid: Uint8Array | undefined): void {
    const next = (this.current ^ 1) as 0 | 1;
    const header = this.structs[next];
    header.writeBigUInt64LE(this.structs[this.current].readBigUInt64LE(SEQUENCE) + 1n, SEQUENCE);
    header.set(this.session, FILE_WRITE_GUID);
    if (dataGuid) header.set(dataGuid(), DATA_WRITE_GUID);
    if (logGuid) header.set(logGuid, LOG_GUID);
    const sector = readAt(this.dev, HEADER_OFFSETS[next], HEADER_SIZE);
    header.copy(sector, 0);
    sector.writeUInt32LE(0, 4);
    sector.writeUInt32LE(crc32c(sector), 4);
    this.put(sector.subarray(0, STRUCT_BYTES), HEADER_OFFSETS[next]);
    this.current = next;
  }

  /** Both headers updated, as vhdx_update_headers does: a new data write GUID each when `dataGuid`. */
  update(dataGuid?: () => Uint8Array, logGuid?: Uint8Array): void {
    this.updateOne(dataGuid, logGuid);
    this.updateOne(dataGuid, logGuid);
  }
}
