// `measure -O FMT` on the trusted side: the measure capability of each format driver that has
// one (the same objects as the drivers' `measure`, imported without the parsers: a unit test keeps
// the two equal), and what qemu answers for the formats that have none.
import type { MeasureCapability } from './types.ts';
import { rawMeasure } from './raw/measure.ts';
import { qcow2Measure } from './qcow2/measure.ts';

const measurers: Record<string, MeasureCapability> = {
  raw: rawMeasure,
  qcow2: qcow2Measure,
};

/**
 * qemu drivers that can create images but not measure them ("does not support size
 * measurement"): instar's own formats and the protocol drivers qemu-img 7.2 and 10.0 list.
 */
const CREATE_ONLY = new Set(['vmdk', 'vpc', 'vhdx', 'vdi', 'qcow', 'parallels', 'qed', 'file', 'host_device', 'host_cdrom', 'nbd', 'nvme', 'ssh', 'gluster', 'iscsi', 'rbd', 'nfs']);

/** qemu drivers that cannot create images at all ("does not support image creation"). */
const NO_CREATE = new Set(['bochs', 'cloop', 'dmg', 'null-co', 'null-aio', 'blkdebug', 'blklogwrites', 'blkverify', 'throttle', 'compress',
  'copy-on-read', 'copy-before-write', 'snapshot-access', 'preallocate', 'quorum', 'replication', 'vvfat', 'http', 'https', 'ftp', 'ftps',
  'io_uring', 'nvme-io_uring', 'virtio-blk-vfio-pci', 'virtio-blk-vhost-user', 'virtio-blk-vhost-vdpa']);

export type MeasurerLookup =
  | { measurer: MeasureCapability }
  | { error: 'unknown' | 'no-create' | 'no-measure' };

/** What `-O name` finds, in qemu's order: the driver, its create options, its bdrv_measure. */
export function findMeasurer(name: string): MeasurerLookup {
  if (Object.hasOwn(measurers, name)) return { measurer: measurers[name] };
  if (CREATE_ONLY.has(name)) return { error: 'no-measure' };
  if (NO_CREATE.has(name)) return { error: 'no-create' };
  return { error: 'unknown' };
}
