// Builds the QAPI ImageInfo / BlockGraphInfo dict qemu-img prints, from what the guest read in the
// image (NodeInfo) and what only the host knows (names, file sizes). Members are inserted in QAPI
// schema order because qemu's key order depends on it (see qdict-order.ts).
import type { FormatSpecific, NodeInfo, SnapshotInfo } from '../formats/types.ts';
import type { Profile } from './profile.ts';
import { isQDict, type QDictValue, type QValue } from './qobject.ts';

/** Facts about the opened file that the host measured itself. */
export interface FileFacts {
  /** The name as qemu spells it: as given on the command line, or combined for backing files. */
  filename: string;
  /** st_blocks * 512. */
  actualSize: number;
  /** st_size; qemu's file driver reports it rounded up to whole 512-byte sectors. */
  length: number;
}

/** The length the protocol layer reports: bdrv_getlength counts whole sectors. */
export function sectorRoundedLength(length: number): number {
  return Math.ceil(length / 512) * 512;
}

function snapshotDict(s: SnapshotInfo): QDictValue {
  return {
    id: s.id,
    name: s.name,
    'vm-state-size': s['vm-state-size'],
    'date-sec': s['date-sec'],
    'date-nsec': s['date-nsec'],
    'vm-clock-sec': s['vm-clock-sec'],
    'vm-clock-nsec': s['vm-clock-nsec'],
    icount: s.icount,
  };
}

/**
 * Drivers report format-specific data in the newest QAPI schema; members an older qemu's schema
 * does not have are dropped here, so format code needs no version switches for output.
 */
function formatSpecificFor(spec: FormatSpecific | undefined, profile: Profile): QValue | undefined {
  if (spec === undefined) return undefined;
  const data = { ...spec.data } as QDictValue;
  const withoutDetached = (luks: QValue | undefined): QValue | undefined => {
    if (!isQDict(luks) || profile.luksDetachedHeader) return luks;
    const copy = { ...luks };
    delete copy['detached-header'];
    return copy;
  };
  if (spec.type === 'luks') return { type: spec.type, data: withoutDetached(data) as QDictValue };
  if (isQDict(data.encrypt) && data.encrypt.format === 'luks') data.encrypt = withoutDetached(data.encrypt);
  return { type: spec.type, data };
}

/** The 'file' protocol node qemu opens below every image (format "file"). */
export function fileNodeInfo(file: FileFacts, profile: Profile): QDictValue {
  const newer = profile.childNodes; // file-posix reports format-specific and children since 8.0
  return {
    filename: file.filename,
    format: 'file',
    'dirty-flag': profile.dirtyFlag ? false : undefined,
    'actual-size': file.actualSize,
    'virtual-size': sectorRoundedLength(file.length),
    'format-specific': newer ? { type: 'file', data: {} } : undefined,
    children: newer ? [] : undefined,
  };
}

/**
 * One image's info dict. `fullBackingFilename` is the backing name combined with the image's
 * directory (qemu prints it even when it equals the name). `extents` are the further files the
 * image is made of (VMDK extents, in descriptor order): qemu counts their allocation into the
 * image's disk size and lists them as children "extents.N", newest attached first. A qcow2
 * external data file is not among them: qemu-img info never opens it (checked with strace on 7.2
 * and 10.0), so it appears only as "data-file" in the format-specific part.
 */
export function imageInfo(node: NodeInfo, file: FileFacts, fullBackingFilename: string | undefined, profile: Profile, extents: FileFacts[] = []): QDictValue {
  const backing = node['backing-filename'];
  const info: QDictValue = {
    filename: file.filename,
    format: node.format,
    'dirty-flag': profile.dirtyFlag ? node['dirty-flag'] : undefined,
    'actual-size': extents.reduce((sum, e) => sum + e.actualSize, file.actualSize),
    'virtual-size': node['virtual-size'],
    'cluster-size': node['cluster-size'],
    encrypted: node.encrypted ? true : undefined,
    compressed: node.compressed,
    'backing-filename': backing,
    'full-backing-filename': backing !== undefined ? fullBackingFilename : undefined,
    'backing-filename-format': backing !== undefined ? node['backing-filename-format'] : undefined,
    snapshots: node.snapshots && node.snapshots.length > 0 ? node.snapshots.map(snapshotDict) : undefined,
    'format-specific': formatSpecificFor(node['format-specific'], profile),
  };
  if (profile.childNodes) {
    const extentChildren = extents.map((e, i) => ({ name: `extents.${i}`, info: fileNodeInfo(e, profile) })).reverse();
    info.children = [...extentChildren, { name: 'file', info: fileNodeInfo(file, profile) }];
  }
  return info;
}
