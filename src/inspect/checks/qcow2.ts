// qcow2: the checks oslo.utils makes (backing file, data file, feature bits) plus the header and
// extension validation qemu itself makes, all within the first cluster.
import { parseHeader, INCOMPAT } from '../../formats/qcow2/header.ts';
import { readExtensions } from '../../formats/qcow2/extensions.ts';
import type { LuksInfo } from '../../formats/luks/header.ts';
import { cString, readAt } from '../../formats/bytes.ts';
import type { Window } from '../window.ts';
import { check, quoted, sizeNumber, type FormatFindings } from '../types.ts';

/**
 * Incompatible feature bits an upload may carry: dirty, corrupt, data file (checked on its own)
 * and compression type. oslo.utils allows exactly these; extended L2 (bit 4) and anything newer
 * are refused, so that instar is never more lenient than the inspector OpenStack deploys.
 */
const ALLOWED_INCOMPATIBLE = 0x0fn;

export function qcow2Checks(w: Window): FormatFindings {
  const raw = readAt(w, 0, 112);
  const version = raw.readUInt32BE(4);
  const incompatible = version >= 3 ? raw.readBigUInt64BE(72) : 0n;
  const checks = [
    check('qcow2-header', () => {
      const h = parseHeader(w);
      // The LUKS header is not needed to judge safety; its place may lie beyond the window.
      readExtensions(w, h, false, () => ({}) as LuksInfo);
      return undefined;
    }),
    check('backing-file', () => {
      const offset = raw.readBigUInt64BE(8);
      if (offset === 0n) return undefined;
      const len = Math.min(raw.readUInt32BE(16), 1023);
      const name = offset < BigInt(w.prefix.length) ? cString(readAt(w, offset, len)) : '';
      return `the image has a backing file ${quoted(name)}`;
    }),
    check('data-file', () => {
      if (incompatible & INCOMPAT.dataFile) return 'the image stores its data in an external data file';
      const h = parseHeader(w);
      const ext = readExtensions(w, h, true, () => ({}) as LuksInfo);
      if (ext.dataFile) return `the image names an external data file ${quoted(cString(ext.dataFile))}`;
      return undefined;
    }),
    check('qcow2-features', () => {
      if (version !== 2 && version !== 3) return `unsupported qcow2 version ${version}`;
      const unknown = incompatible & ~ALLOWED_INCOMPATIBLE;
      if (unknown) return `incompatible feature bits not allowed: 0x${unknown.toString(16)}`;
      return undefined;
    }),
  ];
  return { virtualSize: sizeNumber(raw.readBigUInt64BE(24)), checks };
}
