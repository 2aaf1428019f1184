// qemu-img map's two output forms (qemu-img.c dump_map_entry), entry by entry so that a long map
// streams: human is a table of the data extents, json a list of every extent.
import type { Profile } from './profile.ts';

export interface MapLine {
  start: bigint | number;
  length: number;
  depth: number;
  present: boolean;
  zero: boolean;
  data: boolean;
  compressed: boolean;
  /** Host offset, when qemu has one: qemu's int64, so it can be past 2^53 or negative. */
  offset?: number | bigint;
  /** The file `offset` is in, as qemu names it. */
  filename?: string;
}

export const HUMAN_HEADER = 'Offset          Length          Mapped to       File\n';

/** printf("%#-16" PRIx64): 0 stays "0", others get 0x; a negative int64 prints as its uint64. */
const hex16 = (n: bigint | number) => {
  const u = BigInt.asUintN(64, BigInt(n));
  return (u === 0n ? '0' : '0x' + u.toString(16)).padEnd(16);
};

/** The human line for an entry, or '' when the human form leaves it out (holes and zeros). */
export function humanMapLine(e: MapLine): string {
  if (!e.data || e.zero) return '';
  return `${hex16(e.start)}${hex16(e.length)}${hex16(e.offset ?? 0)}${e.filename ?? ''}\n`;
}

/**
 * An integer as qemu's PRId64 prints it. JS prints a double past 2^53 in its shortest round-trip
 * form (2^61 - 4 MiB as 2305843009209499600), not as the integer it holds exactly.
 */
const decimal = (n: bigint | number) => (typeof n === 'bigint' || Number.isSafeInteger(n) ? String(n) : BigInt(n).toString());

/** The JSON object for an entry, without the separator that follows it. */
export function jsonMapEntry(e: MapLine, profile: Profile): string {
  let text = `{ "start": ${decimal(e.start)}, "length": ${decimal(e.length)}, "depth": ${e.depth},`;
  if (profile.dirtyFlag) text += ` "present": ${e.present},`;
  text += ` "zero": ${e.zero}, "data": ${e.data}`;
  if (profile.mapCompressed) text += `, "compressed": ${e.compressed}`;
  if (e.offset !== undefined) text += `, "offset": ${e.offset}`;
  return text + '}';
}
