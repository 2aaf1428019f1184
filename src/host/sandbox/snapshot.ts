// The guest's V8 startup snapshot (dist/guest.blob, made at build time by
// scripts/guest-snapshot.ts): node deserializes the guest's whole heap, the bundle's top level
// already run, instead of compiling and running the bundle (an info guest ~5 ms cheaper, a
// convert guest ~5 ms: the blob keeps the compiled code of what ran while it was built, the
// top level and the ops' warm-up, src/guest/warm-up.ts; the rest compiles as it runs). Node
// refuses a blob made by another node or with other V8 flags (exit 14, before any JS runs), so
// the host uses one only when the record the build wrote beside it, last, says it was made by
// this very node, with the flags this launch passes, from the bundle that is there now, and is
// the very file (inode, size, mtime) now at that path.
import { closeSync, openSync, readFileSync, readSync, fstatSync, statSync, type BigIntStats } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { bundleId } from '../../guest/bundle-id.ts';

export const SNAPSHOT_FORMAT = 'instar-guest-snapshot 1';

/** What the build vouches for: who made the blob, with which flags, from which bundle. */
export interface SnapshotRecord {
  format: typeof SNAPSHOT_FORMAT;
  node: string;
  execPath: string;
  /** node's own arguments at build time (the permission flags aside): node checks V8's. */
  flags: string[];
  bundleId: string;
  blob: BlobIdentity;
}

export interface BlobIdentity {
  size: string;
  ino: string;
  mtimeNs: string;
}

/** `dist/guest.cjs` → `dist/guest.blob` and its record `dist/guest.blob.json`. */
export function snapshotFiles(bundle: string): { blob: string; record: string } {
  const blob = join(dirname(bundle), basename(bundle).replace(/\.c?js$/, '') + '.blob');
  return { blob, record: `${blob}.json` };
}

export function blobIdentity(file: string): BlobIdentity {
  const st = statSync(file, { bigint: true });
  return { size: String(st.size), ino: String(st.ino), mtimeNs: String(st.mtimeNs) };
}

export function sameBlob(st: BigIntStats, identity: BlobIdentity | undefined): boolean {
  return identity !== undefined && String(st.size) === identity.size && String(st.ino) === identity.ino && String(st.mtimeNs) === identity.mtimeNs;
}

/** The id on the bundle's last line, read from its tail only (the bundle is ~900 KB). */
export function bundleIdOnDisk(bundle: string): string | undefined {
  const fd = openSync(bundle, 'r');
  try {
    const size = fstatSync(fd).size;
    const tail = Buffer.alloc(Math.min(size, 512));
    const n = readSync(fd, tail, 0, tail.length, size - tail.length);
    return bundleId(tail.toString('latin1', 0, n));
  } finally {
    closeSync(fd);
  }
}

/** The blob to start from, or why there is none usable for a guest with these node flags. */
export function usableSnapshot(bundle: string, flags: readonly string[]): { blob: string; identity: BlobIdentity } | { why: string } {
  const { blob, record } = snapshotFiles(bundle);
  let r: SnapshotRecord;
  try {
    r = JSON.parse(readFileSync(record, 'utf8')) as SnapshotRecord;
  } catch {
    return { why: 'no snapshot record' };
  }
  if (r?.format !== SNAPSHOT_FORMAT) return { why: 'unknown snapshot record' };
  if (r.node !== process.version || r.execPath !== process.execPath) return { why: `snapshot made by another node (${r.node} at ${r.execPath})` };
  if (!Array.isArray(r.flags) || r.flags.join('\0') !== flags.join('\0')) return { why: `snapshot made with other flags (${String(r.flags)})` };
  try {
    if (bundleIdOnDisk(bundle) !== r.bundleId) return { why: 'snapshot made from another build of the bundle' };
    if (!sameBlob(statSync(blob, { bigint: true }), r.blob)) return { why: 'snapshot blob is not the file its record describes' };
  } catch (e) {
    return { why: `snapshot unreadable: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}` };
  }
  return { blob, identity: r.blob };
}
