// `qemu-img check` for parallels, read-only. qemu 7.2 walks the BAT once (unclean header,
// clusters starting past the end of the file, statistics, leaked tail); qemu 8.1 split it into
// passes and added the data_off and duplicate-cluster checks, and counts a cluster as outside when
// it ends past the file. One bit per host cluster tracks duplicates.
import type { BlockDevice, Image } from '../types.ts';
import { addLine, type CheckContext, type CheckReport } from '../check-types.ts';
import { readAt, roundUp } from '../bytes.ts';
import { parseParallelsHeader, type ParallelsHeader } from './driver.ts';
import { testDataOff } from './open-check.ts';

const HEADER_SIZE = 64;
const INUSE_MAGIC = 0x746f6e59;
const SECTOR = 512;
const CHUNK = 64 * 1024;

interface Geometry {
  h: ParallelsHeader;
  clusterSize: number;
  dataOff: number;
  inuse: number;
  oldMagic: boolean;
  fileSize: number;
}

/** Calls fn(index, host offset in bytes) for every BAT entry, reading the table in chunks. */
function eachEntry(dev: BlockDevice, g: Geometry, fn: (i: number, off: number) => void): void {
  for (let first = 0; first < g.h.batEntries; first += CHUNK) {
    const n = Math.min(CHUNK, g.h.batEntries - first);
    const chunk = readAt(dev, HEADER_SIZE + first * 4, n * 4);
    for (let i = 0; i < n; i++) fn(first + i, chunk.readUInt32LE(i * 4) * g.h.offMultiplier * SECTOR);
  }
}

function error(report: CheckReport, line: string): void {
  addLine(report, line);
  report.corruptions++;
}

function leakedTail(g: Geometry, end: number, report: CheckReport): void {
  if (g.fileSize <= end) return;
  addLine(report, `ERROR space leaked at the end of the image ${g.fileSize - end}`);
  report.leaks += Math.ceil((g.fileSize - end) / g.clusterSize);
}

/** qemu 7.2's parallels_co_check. */
function checkV7(dev: BlockDevice, g: Geometry, report: CheckReport): void {
  let high = 0;
  let prev = 0;
  eachEntry(dev, g, (i, off) => {
    if (off === 0) {
      prev = 0;
      return;
    }
    if (off > g.fileSize) error(report, `ERROR cluster ${i} is outside image`);
    report['allocated-clusters']++;
    if (off > high) high = off;
    if (prev !== 0 && prev + g.clusterSize !== off) report['fragmented-clusters']++;
    prev = off;
  });
  report['image-end-offset'] = high + g.clusterSize;
  leakedTail(g, report['image-end-offset'], report);
}

/** qemu 8.1+'s passes: data_off, outside clusters, leaked tail, duplicates, statistics. */
function checkV8(dev: BlockDevice, g: Geometry, report: CheckReport): void {
  const { ok: dataOffOk, start: dataStart } = testDataOff(g.h, g.oldMagic, g.dataOff, Math.floor(g.fileSize / SECTOR));
  if (!dataOffOk) error(report, 'ERROR data_off field has incorrect value');
  // data_end as qemu's open leaves it: past the data offset and every cluster the BAT names.
  let dataEnd = dataStart * SECTOR;
  let high = 0;
  eachEntry(dev, g, (i, off) => {
    if (off !== 0 && off + g.clusterSize > dataEnd) dataEnd = off + g.clusterSize;
    if (off + g.clusterSize > g.fileSize) {
      error(report, `ERROR cluster ${i} is outside image`);
      return;
    }
    if (off > high) high = off;
  });
  const end = high === 0 ? dataEnd : high + g.clusterSize;
  report['image-end-offset'] = end;
  leakedTail(g, end, report);
  const used = new Uint8Array(Math.ceil(g.fileSize / g.clusterSize / 8) + 1);
  eachEntry(dev, g, (i, off) => {
    // Entries past the file were reported above (qemu 10.0 aborts on them here).
    if (off === 0 || off + g.clusterSize > g.fileSize || off < dataStart * SECTOR) return;
    const c = Math.floor((off - dataStart * SECTOR) / g.clusterSize);
    const bit = 1 << (c % 8);
    if (used[c >> 3] & bit) error(report, `ERROR duplicate offset in BAT entry ${i}`);
    else used[c >> 3] |= bit;
  });
  let prev = 0;
  eachEntry(dev, g, (_i, off) => {
    if (off === 0 || off + g.clusterSize > end) {
      prev = 0;
      return;
    }
    report['allocated-clusters']++;
    if (prev !== 0 && prev + g.clusterSize !== off) report['fragmented-clusters']++;
    prev = off;
  });
}

export function checkParallels(_image: Image, dev: BlockDevice, report: CheckReport, ctx: CheckContext): void {
  const raw = readAt(dev, 0, HEADER_SIZE);
  const h = parseParallelsHeader(raw);
  const g: Geometry = {
    h,
    clusterSize: h.tracks * SECTOR,
    dataOff: raw.readUInt32LE(48),
    inuse: raw.readUInt32LE(44),
    oldMagic: raw.toString('latin1', 0, 16) === 'WithoutFreeSpace',
    // bdrv_getlength: the file's length in whole sectors.
    fileSize: roundUp(dev.size, SECTOR),
  };
  if (g.inuse === INUSE_MAGIC) error(report, 'ERROR image was not closed correctly');
  report['total-clusters'] = h.batEntries;
  if (ctx.qemuMajor >= 8) checkV8(dev, g, report);
  else checkV7(dev, g, report);
}
