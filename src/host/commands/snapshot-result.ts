// The host checks what the snapshot guest answered before using it: shapes, types and sizes
// (a guest's answer is data, never trusted).
import type { SnapshotRow } from '../../output/snapshot-table.ts';

const MAX_SNAPSHOTS = 65536;
const MAX_TEXT = 65535;
const MAX_MESSAGE = 4096;

export class BadGuestAnswer extends Error {
  constructor() {
    super('the guest answered snapshot with a malformed result');
  }
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const safeCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const text = (v: unknown, max: number): v is string => typeof v === 'string' && v.length <= max;

export function validSnapshotList(raw: unknown): { format: string; snapshots: SnapshotRow[] } {
  if (!isObject(raw) || !text(raw.format, 64) || !Array.isArray(raw.snapshots) || raw.snapshots.length > MAX_SNAPSHOTS) throw new BadGuestAnswer();
  const snapshots = raw.snapshots.map((sn: unknown): SnapshotRow => {
    if (!isObject(sn) || !text(sn.id, MAX_TEXT) || !text(sn.name, MAX_TEXT)) throw new BadGuestAnswer();
    const fields = ['vm-state-size', 'date-sec', 'vm-clock-sec', 'vm-clock-nsec'].map((k) => sn[k]);
    if (!fields.every(safeCount) || (sn.icount !== undefined && !safeCount(sn.icount))) throw new BadGuestAnswer();
    const [vmStateSize, dateSec, vmClockSec, vmClockNsec] = fields as number[];
    return { id: sn.id, name: sn.name, vmStateSize, dateSec, vmClockSec, vmClockNsec, icount: sn.icount as number | undefined };
  });
  return { format: raw.format, snapshots };
}

export type ChangeAnswer =
  | { format: string; done: true }
  | { format: string; errno: string; message: string }
  | { format: string; 'not-found': true }
  | { format: string; unsupported: true }
  | { format: string; refused: string };

export function validSnapshotChange(raw: unknown): ChangeAnswer {
  if (!isObject(raw) || !text(raw.format, 64)) throw new BadGuestAnswer();
  const format = raw.format;
  if (raw.done === true) return { format, done: true };
  if (raw['not-found'] === true) return { format, 'not-found': true };
  if (raw.unsupported === true) return { format, unsupported: true };
  if (text(raw.refused, MAX_MESSAGE)) return { format, refused: raw.refused.replace(/[\x00-\x1f\x7f]/g, '?') };
  if (text(raw.errno, 16) && text(raw.message, 256)) return { format, errno: raw.errno, message: raw.message.replace(/[\x00-\x1f\x7f]/g, '?') };
  throw new BadGuestAnswer();
}
