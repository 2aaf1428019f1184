// Reading a LUKS payload (v1 and v2 alike): whole sectors around the request are read and
// decrypted a batch at a time, and only the requested bytes are copied out; past the volume's
// end reads as zeros.
import { readAt } from '../bytes.ts';
import type { BlockDevice } from '../types.ts';
import type { SectorCipher } from '../crypto/sector-cipher.ts';

const BATCH_BYTES = 1024 * 1024;

export interface Payload {
  dev: BlockDevice;
  cipher: SectorCipher;
  /** Where the encrypted sectors start in the file. */
  offset: number;
  virtualSize: number;
  /** The IV number of payload sector `sector`. */
  ivOf: (sector: number) => number;
}

export function readPayload(p: Payload, buf: Uint8Array, offset: number): void {
  const size = p.cipher.sectorSize;
  const end = Math.min(offset + buf.length, p.virtualSize);
  if (end < offset + buf.length) buf.fill(0, Math.max(0, end - offset));
  const perBatch = Math.max(1, Math.floor(BATCH_BYTES / size));
  for (let sector = Math.floor(offset / size); sector * size < end; sector += perBatch) {
    const last = Math.min(sector + perBatch, Math.ceil(end / size));
    const chunk = readAt(p.dev, p.offset + sector * size, (last - sector) * size);
    p.cipher.decrypt(chunk, p.ivOf(sector));
    const from = Math.max(offset, sector * size);
    const to = Math.min(end, last * size);
    buf.set(chunk.subarray(from - sector * size, to - sector * size), from - offset);
  }
}
