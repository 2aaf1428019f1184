// `measure -O FMT` on the trusted side: the measure capability of each format driver that has
// one (the same objects as the drivers' `measure`, imported without the parsers: a unit test keeps
// the two equal), and what qemu answers for the formats that have none.
import type { CreateOptionType, MeasureCapability, MeasureEnvironment } from './types.ts';
import { rawMeasure, RAW_CREATE_OPTIONS } from './raw/measure.ts';
import { qcow2Measure } from './qcow2/measure.ts';
import { luksMeasure } from './luks/measure.ts';

const measurers: Record<string, MeasureCapability> = {
  raw: rawMeasure,
  qcow2: qcow2Measure,
  luks: luksMeasure,
};

type OptionTable = Readonly<Record<string, CreateOptionType>>;

/**
 * qemu drivers that can create images but not measure them ("does not support size measurement"),
 * with their create options (and the file protocol's): qemu checks -o against these first.
 * Read off `qemu-img create -f FMT -o help`, the same in 7.2 and 10.0.
 */
const CREATE_ONLY: Record<string, OptionTable> = (() => {
  const protocol = RAW_CREATE_OPTIONS;
  const backing = { backing_file: 'string', backing_fmt: 'string' } as const;
  const tables: Record<string, OptionTable> = {
    vmdk: { ...protocol, ...backing, adapter_type: 'string', compat6: 'bool', hwversion: 'string', subformat: 'string', toolsversion: 'string', zeroed_grain: 'bool' },
    vpc: { ...protocol, force_size: 'bool', subformat: 'string' },
    vhdx: { ...protocol, block_size: 'size', block_state_zero: 'bool', log_size: 'size', subformat: 'string' },
    vdi: { ...protocol, static: 'bool' },
    qcow: { ...protocol, ...backing, 'encrypt.format': 'string', 'encrypt.key-secret': 'string', encryption: 'bool' },
    parallels: { ...protocol, cluster_size: 'size' },
    qed: { ...protocol, ...backing, cluster_size: 'size', table_size: 'size' },
  };
  for (const name of ['file', 'host_device', 'host_cdrom', 'nbd', 'nvme', 'ssh', 'gluster', 'iscsi', 'rbd', 'nfs']) tables[name] = protocol;
  return tables;
})();

/** qemu drivers that cannot create images at all ("does not support image creation"). */
const NO_CREATE = new Set(['bochs', 'cloop', 'dmg', 'null-co', 'null-aio', 'blkdebug', 'blklogwrites', 'blkverify', 'throttle', 'compress',
  'copy-on-read', 'copy-before-write', 'snapshot-access', 'preallocate', 'quorum', 'replication', 'vvfat', 'http', 'https', 'ftp', 'ftps',
  'io_uring', 'nvme-io_uring', 'virtio-blk-vfio-pci', 'virtio-blk-vhost-user', 'virtio-blk-vhost-vdpa']);

export type MeasurerLookup =
  | { createOptions: OptionTable; measurer?: MeasureCapability }
  | { error: 'unknown' | 'no-create' };

/** What `-O name` finds, in qemu's order: the driver, its create options, its bdrv_measure (absent: "does not support size measurement"). */
export function findMeasurer(name: string, env: MeasureEnvironment): MeasurerLookup {
  if (Object.hasOwn(measurers, name)) return { createOptions: measurers[name].createOptions(env), measurer: measurers[name] };
  if (Object.hasOwn(CREATE_ONLY, name)) return { createOptions: CREATE_ONLY[name] };
  if (NO_CREATE.has(name)) return { error: 'no-create' };
  return { error: 'unknown' };
}

/** The formats with a measure capability (a unit test compares them with the drivers'). */
export const MEASURERS: Readonly<Record<string, MeasureCapability>> = measurers;
