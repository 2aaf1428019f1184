// The host's check of what a guest reports about an image (DESIGN.md §1: the host trusts nothing
// the guest says). A compromised guest may send any JSON; only a well-formed NodeInfo of bounded
// size gets through, so the renderers can rely on types and sizes.
import type { FormatSpecific, NodeInfo, SnapshotInfo } from '../formats/types.ts';
import type { QDictValue, QValue } from './qobject.ts';

/** Longest string accepted from a guest (qcow2 names are at most 1023 bytes, snapshot tags 65535). */
const MAX_STRING = 65536;
/** Deepest nesting of format-specific data (qcow2 → encrypt → slots → slot is 4). */
const MAX_DEPTH = 12;
/** Most values in one format-specific tree (a vmdk with many extents stays far below). */
const MAX_NODES = 200_000;
/** qcow2 allows at most 65536 snapshots. */
const MAX_SNAPSHOTS = 65536;

export class MalformedResultError extends Error {
  constructor(what: string) {
    super(`the image reader returned a malformed result (${what})`);
    this.name = 'MalformedResultError';
  }
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function checkString(v: unknown, what: string): string {
  if (typeof v !== 'string' || v.length > MAX_STRING) throw new MalformedResultError(what);
  return v;
}

function checkInteger(v: unknown, what: string, min = 0): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) throw new MalformedResultError(what);
  return v;
}

function checkBool(v: unknown, what: string): boolean {
  if (typeof v !== 'boolean') throw new MalformedResultError(what);
  return v;
}

function optional<T>(v: unknown, check: (v: unknown) => T): T | undefined {
  return v === undefined ? undefined : check(v);
}

/** A QAPI value tree: strings, integers, booleans, lists and dicts, bounded in depth and size. */
function checkTree(v: unknown, depth: number, budget: { nodes: number }): QValue {
  if (--budget.nodes < 0 || depth > MAX_DEPTH) throw new MalformedResultError('format-specific too large');
  if (typeof v === 'string') return checkString(v, 'format-specific string');
  if (typeof v === 'boolean') return v;
  if (typeof v === 'number') return checkInteger(v, 'format-specific number', Number.MIN_SAFE_INTEGER);
  if (Array.isArray(v)) return v.map((item) => checkTree(item, depth + 1, budget));
  if (isRecord(v)) {
    const out: QDictValue = {};
    for (const [key, item] of Object.entries(v)) {
      checkString(key, 'format-specific key');
      out[key] = checkTree(item, depth + 1, budget);
    }
    return out;
  }
  throw new MalformedResultError('format-specific value');
}

function checkFormatSpecific(v: unknown): FormatSpecific {
  if (!isRecord(v) || !isRecord(v.data)) throw new MalformedResultError('format-specific');
  const data = checkTree(v.data, 0, { nodes: MAX_NODES }) as Record<string, unknown>;
  return { type: checkString(v.type, 'format-specific type'), data };
}

function checkSnapshot(v: unknown): SnapshotInfo {
  if (!isRecord(v)) throw new MalformedResultError('snapshot');
  return {
    id: checkString(v.id, 'snapshot id'),
    name: checkString(v.name, 'snapshot name'),
    'vm-state-size': checkInteger(v['vm-state-size'], 'vm-state-size'),
    'date-sec': checkInteger(v['date-sec'], 'date-sec'),
    'date-nsec': checkInteger(v['date-nsec'], 'date-nsec'),
    'vm-clock-sec': checkInteger(v['vm-clock-sec'], 'vm-clock-sec'),
    'vm-clock-nsec': checkInteger(v['vm-clock-nsec'], 'vm-clock-nsec'),
    icount: optional(v.icount, (x) => checkInteger(x, 'icount', Number.MIN_SAFE_INTEGER)),
  };
}

/** Validates a guest's `info` result and returns a clean copy (unknown members dropped). */
export function checkNodeInfo(v: unknown): NodeInfo {
  if (!isRecord(v)) throw new MalformedResultError('not an object');
  const snapshots = optional(v.snapshots, (s) => {
    if (!Array.isArray(s) || s.length > MAX_SNAPSHOTS) throw new MalformedResultError('snapshots');
    return s.map(checkSnapshot);
  });
  return {
    format: checkString(v.format, 'format'),
    'dirty-flag': optional(v['dirty-flag'], (x) => checkBool(x, 'dirty-flag')),
    'virtual-size': checkInteger(v['virtual-size'], 'virtual-size'),
    'cluster-size': optional(v['cluster-size'], (x) => checkInteger(x, 'cluster-size', 1)),
    encrypted: optional(v.encrypted, (x) => checkBool(x, 'encrypted')),
    compressed: optional(v.compressed, (x) => checkBool(x, 'compressed')),
    'backing-filename': optional(v['backing-filename'], (x) => checkString(x, 'backing-filename')),
    'backing-filename-format': optional(v['backing-filename-format'], (x) => checkString(x, 'backing-filename-format')),
    snapshots,
    'format-specific': optional(v['format-specific'], checkFormatSpecific),
    'data-file': optional(v['data-file'], (x) => checkString(x, 'data-file')),
  };
}
