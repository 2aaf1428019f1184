// The "Snapshot list:" table of human `info` (block/qapi.c bdrv_snapshot_dump). C pads with
// printf field widths, which count bytes, not characters; padBytes does the same.
import type { Profile } from './profile.ts';
import { sizeToStr } from './size.ts';
import { escapeForTerminal } from './terminal.ts';

/** One row's data, as the SnapshotInfo QAPI struct carries it. */
export interface SnapshotRow {
  id: string;
  name: string;
  vmStateSize: number;
  dateSec: number;
  vmClockSec: number;
  vmClockNsec: number;
  icount?: number;
}

function padBytes(s: string, width: number, left: boolean): string {
  const fill = ' '.repeat(Math.max(0, width - Buffer.byteLength(s, 'utf8')));
  return left ? s + fill : fill + s;
}
const left = (s: string, w: number) => padBytes(s, w, true);
const right = (s: string, w: number) => padBytes(s, w, false);

/** strftime("%Y-%m-%d %H:%M:%S") of localtime(), as qemu formats the snapshot date. */
function localDate(sec: number): string {
  const d = new Date(sec * 1000);
  const p2 = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p2(d.getMonth() + 1)}-${p2(d.getDate())} ${p2(d.getHours())}:${p2(d.getMinutes())}:${p2(d.getSeconds())}`;
}

/** The VM clock as hours:minutes:seconds.milliseconds; 9.0+ pads hours to four digits. */
function vmClock(row: SnapshotRow, profile: Profile): string {
  const nsec = BigInt(row.vmClockSec) * 1_000_000_000n + BigInt(row.vmClockNsec);
  const secs = nsec / 1_000_000_000n;
  const hours = String(secs / 3600n).padStart(profile.snapshotUnderscores ? 4 : 2, '0');
  const minutes = String((secs / 60n) % 60n).padStart(2, '0');
  const seconds = String(secs % 60n).padStart(2, '0');
  const millis = String((nsec / 1_000_000n) % 1000n).padStart(3, '0');
  return `${hours}:${minutes}:${seconds}.${millis}`;
}

export function snapshotHeader(profile: Profile): string {
  if (profile.snapshotUnderscores) {
    return `${left('ID', 7)} ${left('TAG', 16)} ${right('VM_SIZE', 8)} ${right('DATE', 19)} ${right('VM_CLOCK', 15)} ${right('ICOUNT', 10)}`;
  }
  return `${left('ID', 10)}${left('TAG', 17)}${right('VM SIZE', 8)}${right('DATE', 20)}${right('VM CLOCK', 13)}${right('ICOUNT', 11)}`;
}

export function snapshotLine(row: SnapshotRow, profile: Profile): string {
  const id = escapeForTerminal(row.id);
  const name = escapeForTerminal(row.name);
  const size = sizeToStr(row.vmStateSize);
  const date = localDate(row.dateSec);
  const clock = vmClock(row, profile);
  // A snapshot without an instruction count: 9.0's table says so with '--' (measured on 10.0).
  const icount = row.icount === undefined ? (profile.snapshotUnderscores ? '--' : '') : String(row.icount);
  if (profile.snapshotUnderscores) {
    return `${left(id, 7)} ${left(name, 16)} ${right(size, 8)} ${right(date, 19)} ${right(clock, 15)} ${right(icount, 10)}`;
  }
  return `${left(id, 9)} ${left(name, 16)} ${right(size, 8)}${right(date, 20)}${right(clock, 13)}${right(icount, 11)}`;
}
