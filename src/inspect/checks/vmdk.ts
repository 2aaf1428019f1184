// VMDK: only the single-file variants (monolithicSparse, streamOptimized) are safe, and only when
// their embedded descriptor names no other file and no parent. oslo.utils' rules (create type,
// descriptor grammar, extent lines, stream-optimized footer) plus three it lacks: the parent
// hint (qemu follows parentFileNameHint), a zero-capacity header (qemu then opens the
// descriptor's extents) and non-SPARSE extents.
import { readAt, cString } from '../../formats/bytes.ts';
import { VMDK3_MAGIC, VMDK4_MAGIC, footerHeaderIfAtEnd, readVmdk4Header } from '../../formats/vmdk/header.ts';
import { parentHint, parseExtentLines, MAX_DESCRIPTOR_BYTES, CID_AREA_BYTES } from '../../formats/vmdk/descriptor.ts';
import type { Window } from '../window.ts';
import { check, quoted, sizeNumber, type CheckResult, type FormatFindings } from '../types.ts';

const SAFE_CREATE_TYPES = ['monolithicsparse', 'streamoptimized'];
const EXTENT_ACCESS = ['rw', 'rdonly', 'noaccess'];
const GD_AT_END = (1n << 64n) - 1n;

/** The descriptor's text: embedded after a sparse header, or the whole (text) file. */
function descriptorText(w: Window, sparse: boolean): string {
  if (!sparse) return cString(readAt(w, 0, Math.min(w.size, MAX_DESCRIPTOR_BYTES)));
  const raw = readAt(w, 0, 44);
  const start = raw.readBigUInt64LE(28) * 512n;
  const len = Math.min(MAX_DESCRIPTOR_BYTES, Number(BigInt.asUintN(32, raw.readBigUInt64LE(36))) * 512);
  return cString(readAt(w, start, len));
}

/** createType, as oslo finds it: case-insensitively, the first quoted value. */
function createType(desc: string): string | undefined {
  const m = /createtype="([^"]{0,63})"/.exec(desc.toLowerCase());
  return m?.[1];
}

/** oslo's line grammar: comments, ddb.*, key=value, extent lines; nothing else. */
function badDescriptorLine(desc: string): string | undefined {
  for (const line of desc.toLowerCase().split('\n').map((l) => l.trim())) {
    if (line === '' || line.startsWith('#') || line.startsWith('ddb')) continue;
    if (line.includes('=') && !line.split('=')[0].includes(' ')) continue;
    if (EXTENT_ACCESS.includes(line.split(' ')[0])) continue;
    return line;
  }
  return undefined;
}

function extentLines(desc: string): string[] {
  return desc.split('\n').map((l) => l.trim()).filter((l) => EXTENT_ACCESS.includes(l.toLowerCase().split(' ')[0]));
}

/** A stream-optimized image's footer must repeat the header and end the stream properly. */
function footerReason(w: Window): string | undefined {
  const fileBytes = Math.ceil(w.size / 512) * 512;
  if (fileBytes < 1536 + 512) return 'the image is too short for its footer';
  const f = readAt(w, fileBytes - 1536, 1536);
  const h = readAt(w, 0, 512);
  footerHeaderIfAtEnd(w, readVmdk4Header(w)); // the markers, as qemu checks them
  const field = (b: Buffer, at: number) => b.readBigUInt64LE(at);
  if (f.readUInt32LE(512) !== h.readUInt32LE(0)) return 'header and footer signature do not match';
  if (f.readUInt32LE(516) !== h.readUInt32LE(4)) return 'header and footer versions do not match';
  if (field(f, 512 + 28) !== field(h, 28) || field(f, 512 + 36) !== field(h, 36)) return 'footer names a different descriptor than the header';
  if (field(f, 512 + 56) === GD_AT_END) return 'the footer says the footer is at the end again';
  if (f.subarray(16, 512).some((b) => b !== 0) || f.subarray(1040, 1536).some((b) => b !== 0)) return 'footer or end-of-stream marker is invalid';
  return undefined;
}

export function vmdkChecks(w: Window): FormatFindings {
  const magic = readAt(w, 0, 4).readUInt32BE(0);
  if (magic === VMDK3_MAGIC) {
    return { virtualSize: 0, checks: [{ name: 'vmdk-create-type', passed: false, reason: 'COWD (VMDK3) images are not allowed' }] };
  }
  const sparse = magic === VMDK4_MAGIC;
  const checks: CheckResult[] = [];
  let virtualSize = 0;
  if (sparse) {
    const h = readVmdk4Header(w);
    checks.push(check('vmdk-header', () => {
      if (h.version < 1 || h.version > 3) return `unsupported VMDK version ${h.version}`;
      if (h.descOffset !== 1n) return 'the descriptor is not right after the header (sector 1)';
      if (h.capacity === 0n) return 'a sparse header with no capacity makes qemu open the descriptor\'s extents';
      return undefined;
    }));
    if (h.gdOffset === GD_AT_END) checks.push(check('vmdk-footer', () => footerReason(w)));
    try {
      virtualSize = sizeNumber(footerHeaderIfAtEnd(w, h).capacity * 512n);
    } catch {
      virtualSize = sizeNumber(h.capacity * 512n);
    }
  }
  let desc = '';
  const text = check('vmdk-descriptor', () => {
    desc = descriptorText(w, sparse);
    if (createType(desc) === undefined) return 'no createType in the descriptor';
    const bad = badDescriptorLine(desc);
    return bad === undefined ? undefined : `invalid descriptor line ${quoted(bad)}`;
  });
  checks.push(text);
  checks.push(check('vmdk-create-type', () => {
    const type = createType(desc);
    if (type !== undefined && SAFE_CREATE_TYPES.includes(type)) return sparse ? undefined : 'a descriptor file is not a single-file image';
    return `create type ${quoted(type ?? '(none)')} is not monolithicSparse or streamOptimized`;
  }));
  checks.push(check('vmdk-extents', () => {
    const lines = extentLines(desc);
    if (lines.length === 0) return 'the descriptor names no extent';
    const slash = lines.find((l) => l.includes('/'));
    if (slash) return `an extent names a path: ${quoted(slash)}`;
    const { extents, error } = parseExtentLines(desc);
    if (error) return error.message;
    const other = extents.find((e) => e.type !== 'SPARSE' || !sparse);
    if (other) return `extent ${quoted(other.name)} is another file (${other.type})`;
    return undefined;
  }));
  checks.push(check('backing-file', () => {
    const area = new Uint8Array(CID_AREA_BYTES);
    area.set(readAt(w, sparse ? 512 : 0, CID_AREA_BYTES));
    const hint = parentHint(area);
    if (hint) return `the image names a parent ${quoted(hint)}`;
    return undefined;
  }));
  return { virtualSize, checks };
}
