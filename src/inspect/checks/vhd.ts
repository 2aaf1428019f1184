// VHD (qemu's vpc) and VHDX: safe unless they are differencing disks, which name a parent file.
// oslo.utils has no check for either (its VHD and VHDX inspectors only report a size); refusing
// parents is where instar is stricter.
import { readFooter, totalSectors } from '../../formats/vpc/footer.ts';
import { readDynamicHeader } from '../../formats/vpc/dynamic-header.ts';
import { checkSignature, readCurrentHeader, readRegionTable, RegionList } from '../../formats/vhdx/headers.ts';
import { FILE_PARAMETERS, PARENT_LOCATOR, VIRTUAL_DISK_SIZE, guidEqual } from '../../formats/vhdx/guid.ts';
import { readAt } from '../../formats/bytes.ts';
import type { Window } from '../window.ts';
import { check, quoted, sizeNumber, type CheckResult, type FormatFindings } from '../types.ts';

const VHD_DIFFERENCING = 4;

export function vpcChecks(w: Window): FormatFindings {
  let virtualSize = 0;
  let fixed: FormatFindings['fixed'];
  const checks: CheckResult[] = [
    check('vhd-footer', () => {
      const footer = readFooter(w);
      virtualSize = sizeNumber(totalSectors(footer, true) * 512n);
      // A fixed VHD is the disk's bytes followed by the footer.
      if (!footer.atStart) fixed = { minFileSize: virtualSize + 512, what: 'the fixed VHD disk and its footer' };
      return undefined;
    }),
    check('backing-file', () => {
      const footer = readFooter(w);
      if (footer.diskType !== VHD_DIFFERENCING) return undefined;
      let parent = '';
      try {
        parent = readDynamicHeader(w, footer.dataOffset, 0n).parentName;
      } catch {
        // The parent's name is only for the message; the disk type alone fails the check.
      }
      return `a differencing disk with a parent ${quoted(parent)}`;
    }),
  ];
  return { virtualSize, checks, fixed };
}

interface VhdxMetadataItems {
  virtualSize?: bigint;
  hasParentFlag: boolean;
  parentLocator: boolean;
}

/** Reads the metadata table for the items that matter here (the full parser refuses parents). */
function metadataItems(w: Window): VhdxMetadataItems {
  checkSignature(w);
  const header = readCurrentHeader(w);
  const regions = new RegionList();
  regions.add(header.logOffset, BigInt(header.logLength));
  const { metadata } = readRegionTable(w, regions);
  const table = readAt(w, metadata.fileOffset, 64 * 1024);
  if (table.toString('latin1', 0, 8) !== 'metadata') throw new RangeError('VHDX metadata table signature missing');
  const count = Math.min(table.readUInt16LE(10), 2047);
  const items: VhdxMetadataItems = { hasParentFlag: false, parentLocator: false };
  for (let i = 0; i < count; i++) {
    const at = 32 + 32 * i;
    const id = table.subarray(at, at + 16);
    const offset = metadata.fileOffset + BigInt(table.readUInt32LE(at + 16));
    if (guidEqual(id, PARENT_LOCATOR)) items.parentLocator = true;
    else if (guidEqual(id, FILE_PARAMETERS)) items.hasParentFlag = (readAt(w, offset, 8).readUInt32LE(4) & 2) !== 0;
    else if (guidEqual(id, VIRTUAL_DISK_SIZE)) items.virtualSize = readAt(w, offset, 8).readBigUInt64LE(0);
  }
  return items;
}

export function vhdxChecks(w: Window): FormatFindings {
  let items: VhdxMetadataItems | undefined;
  const checks: CheckResult[] = [
    check('vhdx-metadata', () => {
      items = metadataItems(w);
      return items.virtualSize === undefined ? 'no virtual disk size in the metadata' : undefined;
    }),
    check('backing-file', () => {
      items ??= metadataItems(w);
      if (items.parentLocator) return 'a differencing disk: the metadata has a parent locator';
      if (items.hasParentFlag) return 'a differencing disk: the file parameters say it has a parent';
      return undefined;
    }),
  ];
  return { virtualSize: items?.virtualSize === undefined ? 0 : sizeNumber(items.virtualSize), checks };
}
