// `qemu-img check` for vmdk (qemu's vmdk_co_check): every grain the disk maps must start before
// the end of its extent file. The first problem stops the check, which then fails; one grain
// table lookup per allocated grain, runs of empty grains skipped whole.
import { ImageError, type BlockDevice, type Image } from '../types.ts';
import { addLine, CheckFailure, type CheckReport } from '../check-types.ts';
import { VmdkImage } from './image.ts';
import { GrainStatus } from './sparse-extent.ts';

export function checkVmdk(image: Image, _dev: BlockDevice, report: CheckReport): void {
  if (!(image instanceof VmdkImage)) throw new ImageError('check: not a vmdk image');
  const stop = (line: string, strerror: string): never => {
    addLine(report, line);
    report.corruptions++;
    throw new CheckFailure(strerror);
  };
  // bdrv_getlength: a file's length in whole sectors.
  const length = (dev: BlockDevice) => Math.ceil(dev.size / 512) * 512;
  for (const placed of image.state.extents) {
    const ext = placed.ext;
    const sectorOf = (rel: number) => Math.floor((placed.start + rel) / 512);
    if (ext.flat) {
      // A flat extent is one "cluster": its start must lie inside its file.
      if (ext.hostOffset(0) >= BigInt(length(ext.dev))) stop(`ERROR: cluster offset for sector ${sectorOf(0)} points after EOF`, 'Invalid argument');
      continue;
    }
    const size = placed.end - placed.start;
    for (let rel = 0; rel < size;) {
      let status: GrainStatus;
      try {
        status = ext.lookup(rel);
      } catch (e) {
        if (!(e instanceof ImageError)) throw e;
        status = GrainStatus.Error;
      }
      // qemu's VMDK_ERROR is -1, which qemu-img reports as -EPERM.
      if (status === GrainStatus.Error) stop(`ERROR: could not get cluster_offset for sector ${sectorOf(rel)}`, 'Operation not permitted');
      if (status === GrainStatus.Data) {
        if (ext.hostOffset >= length(ext.dev)) stop(`ERROR: cluster offset for sector ${sectorOf(rel)} points after EOF`, 'Invalid argument');
        rel += ext.clusterBytes - (rel % ext.clusterBytes);
      } else {
        rel += Math.max(ext.run, ext.clusterBytes - (rel % ext.clusterBytes));
      }
    }
  }
}
