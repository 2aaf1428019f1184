// What a file's bytes claim to be. Every signature any consumer might act on is looked for, not
// just the first that matches: a file that is two things at once (a polyglot) is the attack the
// inspector exists to catch. The image-format signatures are qemu's probes (src/formats), so the
// inspector sees what qemu-img would see; ISO 9660/UDF and MBR/GPT are added because a boot
// loader or a hypervisor's firmware acts on those.
import { drivers } from '../formats/registry.ts';
import { PROBE_SIZE } from '../formats/detect.ts';
import { MAX_DESCRIPTOR_BYTES } from '../formats/vmdk/descriptor.ts';
import { METADATA_REGION, guidEqual } from '../formats/vhdx/guid.ts';
import { BASE_PREFIX, type Window } from './window.ts';

/** Formats the report can name: qemu's driver names plus 'iso'. */
export type Signature = { format: string; detail?: string };

const view = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);
const latin1 = (b: Uint8Array, at: number, len: number) =>
  b.length >= at + len ? Buffer.from(b.buffer, b.byteOffset + at, len).toString('latin1') : '';

/** qemu probes a zero-padded 2048-byte head. */
function probeHead(prefix: Uint8Array): Uint8Array {
  const head = new Uint8Array(PROBE_SIZE);
  head.set(prefix.subarray(0, PROBE_SIZE));
  return head;
}

/** ISO 9660 ("CD001") or UDF ("NSR02"/"NSR03") volume descriptor at 32 KiB. */
export function isIso(prefix: Uint8Array): boolean {
  return ['CD001', 'NSR02', 'NSR03'].includes(latin1(prefix, 0x8001, 5));
}

/** A FAT volume boot record carries the MBR signature too; oslo excludes it the same way. */
function isFatBootRecord(prefix: Uint8Array): boolean {
  return prefix[0x10] === 2 && prefix[0x15] === 0xf8;
}

/** An MBR (or GPT's protective MBR): the 0x55AA boot signature, not a FAT boot record. */
export function hasMbr(prefix: Uint8Array): boolean {
  return prefix.length >= 512 && prefix[510] === 0x55 && prefix[511] === 0xaa && !isFatBootRecord(prefix);
}

function isFixedVhdFooter(tail: Uint8Array): boolean {
  if (tail.length < 512) return false;
  const footer = tail.subarray(tail.length - 512);
  return latin1(footer, 0, 8) === 'conectix' && view(footer).getUint32(60, false) === 2;
}

/** Every signature the window carries, in qemu's order of preference (its probe scores first). */
export function signatures(w: Window, fileName?: string): Signature[] {
  const found: { format: string; score: number; detail?: string }[] = [];
  const head = probeHead(w.prefix);
  for (const d of drivers) {
    if (d.name === 'raw') continue;
    const score = d.probe(head, fileName);
    if (score > 0) found.push({ format: d.name, score });
  }
  // qemu's dmg probe goes by the name; the trailer is what really marks a DMG.
  if (w.tail.length >= 512 && latin1(w.tail, w.tail.length - 512, 4) === 'koly' && !found.some((f) => f.format === 'dmg')) {
    found.push({ format: 'dmg', score: 1 });
  }
  // A fixed VHD has its footer only at the end; qemu probes it as raw, uploaders call it vhd.
  if (!found.some((f) => f.format === 'vpc') && isFixedVhdFooter(w.tail)) found.push({ format: 'vpc', score: 1, detail: 'fixed' });
  found.sort((a, b) => b.score - a.score);
  const out: Signature[] = found.map(({ format, detail }) => (detail ? { format, detail } : { format }));
  if (isIso(w.prefix)) out.push({ format: 'iso' });
  if (hasMbr(w.prefix)) out.push({ format: 'raw', detail: gptHeaderAt(w.prefix) ? 'gpt' : 'mbr' });
  return out;
}

/** The sector size whose LBA 1 holds a GPT header ("EFI PART"), if any. */
export function gptHeaderAt(prefix: Uint8Array): 512 | 4096 | undefined {
  if (latin1(prefix, 512, 8) === 'EFI PART') return 512;
  if (latin1(prefix, 4096, 8) === 'EFI PART') return 4096;
  return undefined;
}

/**
 * How many leading bytes the checks of whatever `prefix` starts with need. Depends on the prefix
 * alone (never on the file's length), so a stream and a file settle on the same window.
 */
export function prefixNeed(prefix: Uint8Array): number {
  const v = view(prefix);
  const magic = prefix.length >= 4 ? v.getUint32(0, false) : 0;
  if (magic === 0x514649fb && prefix.length >= 24) {
    // qcow2: the header, its extensions and the backing file name all sit in the first cluster.
    const bits = v.getUint32(20, false);
    return bits >= 9 && bits <= 21 ? Math.max(BASE_PREFIX, 2 ** bits) : BASE_PREFIX;
  }
  if (magic === 0x4b444d56 && prefix.length >= 44) {
    // VMDK4 sparse: the embedded descriptor (a zero-capacity header makes qemu read 1 MiB of it).
    const capacity = v.getBigUint64(12, true);
    const descStart = Number(BigInt.asUintN(48, v.getBigUint64(28, true) * 512n));
    const descBytes = capacity === 0n ? MAX_DESCRIPTOR_BYTES : Math.min(MAX_DESCRIPTOR_BYTES, Number(BigInt.asUintN(32, v.getBigUint64(36, true))) * 512);
    return Math.max(BASE_PREFIX, descStart + descBytes);
  }
  if (latin1(prefix, 0, 8) === 'vhdxfile') return vhdxNeed(prefix);
  if (latin1(prefix, 0, 8) === 'conectix' && prefix.length >= 24) {
    // Dynamic VHD: the 1 KiB dynamic header at the footer copy's data offset.
    const dataOffset = v.getBigUint64(16, false);
    return dataOffset < 2n ** 40n ? Math.max(BASE_PREFIX, Number(dataOffset) + 1024) : BASE_PREFIX;
  }
  const gpt = gptHeaderAt(prefix);
  if (gpt && prefix.length >= gpt + 92) {
    const entriesLba = v.getBigUint64(gpt + 72, true);
    const entriesBytes = v.getUint32(gpt + 80, true) * v.getUint32(gpt + 84, true);
    const end = entriesLba * BigInt(gpt) + BigInt(entriesBytes);
    return end < 2n ** 40n ? Math.max(BASE_PREFIX, Number(end)) : BASE_PREFIX;
  }
  // A VMDK descriptor file is text read whole by qemu (up to 1 MiB).
  if (drivers.find((d) => d.name === 'vmdk')?.probe(probeHead(prefix))) return MAX_DESCRIPTOR_BYTES;
  return BASE_PREFIX;
}

/** VHDX: the region table at 192 KiB, then the metadata region it points at. */
function vhdxNeed(prefix: Uint8Array): number {
  const tableEnd = 256 * 1024;
  if (prefix.length < tableEnd) return tableEnd;
  const v = view(prefix);
  const table = 192 * 1024;
  const count = Math.min(v.getUint32(table + 8, true), 2047);
  for (let i = 0; i < count; i++) {
    const at = table + 16 + 32 * i;
    if (!guidEqual(prefix.subarray(at, at + 16), METADATA_REGION)) continue;
    const end = v.getBigUint64(at + 16, true) + BigInt(v.getUint32(at + 24, true));
    return end < 2n ** 40n ? Math.max(tableEnd, Number(end)) : tableEnd;
  }
  return tableEnd;
}
