// `qemu-img check` for vdi (qemu's vdi_co_check): every allocated block map entry must point
// inside the image's blocks and at a block no other entry uses, and the header's count of
// allocated blocks must match. A bit per block tracks use (qemu keeps 4 bytes per block).
import type { BlockDevice, Image } from '../types.ts';
import { addLine, type CheckReport } from '../check-types.ts';
import { readAt } from '../bytes.ts';
import { parseVdiHeader } from './driver.ts';

/** Entries at or above this are holes (discarded or never written). */
const DISCARDED = 0xfffffffe;
/** Block map entries read per chunk. */
const CHUNK = 64 * 1024;

export function checkVdi(_image: Image, dev: BlockDevice, report: CheckReport): void {
  const raw = readAt(dev, 0, 512);
  const h = parseVdiHeader(raw);
  const blocksAllocatedField = raw.readUInt32LE(0x184);
  const blocks = h.blocksInImage; // at most 0x1fffff80: the bitset is at most 64 MiB
  const used = new Uint8Array(Math.ceil(blocks / 8));
  let allocated = 0;
  for (let first = 0; first < blocks; first += CHUNK) {
    const n = Math.min(CHUNK, blocks - first);
    const chunk = readAt(dev, h.offsetBmap + first * 4, n * 4);
    for (let i = 0; i < n; i++) {
      const entry = chunk.readUInt32LE(i * 4);
      if (entry >= DISCARDED) continue;
      if (entry >= blocks) {
        addLine(report, `ERROR: block index ${first + i} too large, is ${entry}`);
        report.corruptions++;
        continue;
      }
      allocated++;
      const bit = 1 << (entry % 8);
      if (used[entry >> 3] & bit) {
        // qemu names the block twice: its tracker holds the entry's own value.
        addLine(report, `ERROR: block index ${entry} also used by ${entry}`);
        report.corruptions++;
      } else used[entry >> 3] |= bit;
    }
  }
  if (allocated !== blocksAllocatedField) {
    addLine(report, `ERROR: allocated blocks mismatch, is ${allocated}, should be ${blocksAllocatedField}`);
    report.corruptions++;
  }
}
