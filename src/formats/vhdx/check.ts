// `qemu-img check` for vhdx (qemu's vhdx_co_check): the BAT entries that point past the end of
// the file or into another region, each reported with qemu's error_report line and counted as a
// corruption. qemu-img check opens the image without this check (BDRV_O_CHECK) so that it can
// report instead of refusing. A log replayed by a writable open (check -r) counts as one fixed
// corruption, as in qemu.
import type { BlockDevice } from '../types.ts';
import { VhdxImage } from './driver.ts';
import { addLine, type Checker, type CheckReport } from '../check-types.ts';
import { Bat } from './bat.ts';
import { RegionList, readCurrentHeader, readRegionTable } from './headers.ts';
import { readMetadata } from './metadata.ts';

export const checkVhdx: Checker = (image, dev: BlockDevice, report: CheckReport) => {
  if (image instanceof VhdxImage && image.logReplayed) report['corruptions-fixed']++;
  // The same walk as the open (which succeeded), up to the BAT.
  const header = readCurrentHeader(dev);
  const regions = new RegionList();
  regions.add(header.logOffset, BigInt(header.logLength));
  const { bat: batRegion, metadata: metadataRegion } = readRegionTable(dev, regions);
  const metadata = readMetadata(dev, metadataRegion);
  const totalSectors = metadata.virtualDiskSize / 512n;
  const bat = Bat.load(dev, batRegion, metadata, regions, totalSectors, true);
  const found: string[] = [];
  bat.check(dev, metadata, regions, totalSectors, found);
  for (const line of found) addLine(report, [2, line]);
  report.corruptions += found.length;
};
