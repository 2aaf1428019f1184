// qemu's vmdk driver gives the image a new random CID on its first write after each open: it
// reads the descriptor area (20 sectors), keeps the text from "parentCID" on, prints the new
// CID in hex (no padding) after the first "CID" and its '=', appends the kept text, and writes
// the whole area back. Bytes past the new text's end keep what the area held (the old tail).
import { CID_AREA_BYTES } from './descriptor.ts';

const NUL = 0;

function strlen(area: Uint8Array, from = 0): number {
  const at = area.indexOf(NUL, from);
  return (at < 0 ? area.length : at) - from;
}

function find(area: Uint8Array, text: string): number {
  return Buffer.from(area.buffer, area.byteOffset, strlen(area)).indexOf(text, 0, 'latin1');
}

/** Whether qemu's CID update can run on this area (it fails with EINVAL without "parentCID"). */
export function cidUpdatable(area: Uint8Array): boolean {
  const copy = Uint8Array.from(area.subarray(0, CID_AREA_BYTES));
  copy[CID_AREA_BYTES - 1] = NUL;
  return find(copy, 'parentCID') >= 0;
}

/** The descriptor area after qemu's CID update with `cid`; `area` is CID_AREA_BYTES long. */
export function rewriteCid(area: Uint8Array, cid: number): Uint8Array {
  const out = Buffer.from(area.subarray(0, CID_AREA_BYTES));
  out[CID_AREA_BYTES - 1] = NUL;
  const parent = find(out, 'parentCID');
  if (parent < 0) throw new Error('rewriteCid: no parentCID (check cidUpdatable first)');
  const kept = Buffer.from(out.subarray(parent, parent + strlen(out, parent)));
  // "CID" is always found: "parentCID" holds it. qemu skips its length and the '=' after it.
  const at = find(out, 'CID') + 4;
  const room = CID_AREA_BYTES - at;
  if (room > 0) {
    const printed = Buffer.from(`${(cid >>> 0).toString(16)}\n`, 'latin1').subarray(0, room - 1);
    out.set(printed, at);
    out[at + printed.length] = NUL;
  }
  // pstrcat: appended at the new text's end, cut to fit the area with its NUL.
  const end = strlen(out);
  const tail = kept.subarray(0, Math.max(0, CID_AREA_BYTES - 1 - end));
  out.set(tail, end);
  if (end + tail.length < CID_AREA_BYTES) out[end + tail.length] = NUL;
  return out;
}
