// The guest bundle's V8 startup snapshot (src/host/sandbox/snapshot.ts): node runs the stamped
// bundle's top level once here, with the flags and the empty environment of a sandboxed guest,
// and saves the heap; a guest started from it skips compiling and running that top level. The
// bundle's entry (src/guest/start.ts) sees the build, registers serving as the snapshot's main
// function and runs the commonest ops once on images in memory (src/guest/warm-up.ts), whose
// compiled code the blob then keeps; a warm-up that fails fails the build of the blob. The blob
// is checked by one real start before it is put in place, and its record is written last: a
// build cut short leaves no record, so the host uses no blob.
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { bundleId } from '../src/guest/bundle-id.ts';
import { blobIdentity, snapshotFiles, SNAPSHOT_FORMAT, usableSnapshot, type SnapshotRecord } from '../src/host/sandbox/snapshot.ts';
import { defaultLimits } from '../src/host/sandbox/limits.ts';
import { nodeArgs } from '../src/host/sandbox/layers/permission.ts';
import { stampBundle } from './guest-cache.ts';

/** node's flags for the default limits of every op (the heap limit is a V8 flag node checks). */
export function snapshotFlags(): string[] {
  return nodeArgs('', defaultLimits('convert', 2, 1), false);
}

/** One `info` of a small raw file through the blob, as the host starts a guest: its last message. */
function tryBlob(blob: string, flags: string[], dir: string): string {
  const input = join(dir, 'in.raw');
  writeFileSync(input, Buffer.alloc(64 * 1024));
  const profile = { major: 10, minor: 0, childNodes: true, dirtyFlag: true, mapCompressed: true, snapshotUnderscores: true, vhdCurrentSize: true, newUsageErrors: true, luksDetachedHeader: true };
  const request = { op: 'info', options: { format: 'raw', unsafeQuirks: false, fileName: input, profile }, devices: [{ fd: 4, role: 'input', writable: false }] };
  const fd = openSync(input, 'r');
  try {
    const permission = nodeArgs('', defaultLimits('info', 1, 0), true).filter((f) => !flags.includes(f));
    const r = spawnSync(process.execPath, [...permission, ...flags, '--snapshot-blob', blob], { stdio: ['pipe', 'ignore', 'pipe', 'pipe', fd], input: JSON.stringify(request), env: {}, cwd: '/', timeout: 60_000 });
    const messages = String(r.output?.[3] ?? '').trim().split('\n');
    return messages[messages.length - 1] || `exit ${r.status}: ${String(r.stderr).trim().split('\n')[0]}`;
  } finally {
    closeSync(fd);
  }
}

/** Writes `<bundle>.blob` and then its record `<bundle>.blob.json`; throws when it cannot. */
export function makeGuestSnapshot(bundle: string): void {
  // Absolute: node builds with '/' as its cwd.
  const { blob, record } = snapshotFiles(resolve(bundle));
  // First: while the blob is rebuilt, no record vouches for any blob.
  rmSync(record, { force: true });
  const source = stampBundle(bundle);
  const id = bundleId(source)!;
  const dir = mkdtempSync(join(tmpdir(), 'instar-guest-snapshot-'));
  try {
    // Built from this copy: the blob must hold the text its id names, whatever rewrites the bundle.
    const text = join(dir, 'guest.cjs');
    writeFileSync(text, source);
    const flags = snapshotFlags();
    const aside = `${blob}.${process.pid}`;
    // The guest's empty environment and a cwd of '/': whatever the top level might read is then
    // what a sandboxed guest would see (test/sandbox/snapshot-top-level.test.ts checks it reads nothing).
    const built = spawnSync(process.execPath, [...flags, '--snapshot-blob', aside, '--build-snapshot', text], { env: {}, cwd: '/', encoding: 'utf8', timeout: 120_000 });
    if (built.status !== 0) throw new Error(`node --build-snapshot failed (${built.error?.message ?? `exit ${built.status}`}): ${(built.stderr ?? '').trim().split('\n')[0]}`);
    let identity;
    try {
      const last = tryBlob(aside, flags, dir);
      if (!last.includes('"type":"result"')) throw new Error(`a guest started from it failed: ${last}`);
      // Taken before the rename (which keeps it): another build may rename its blob in next.
      identity = blobIdentity(aside);
      renameSync(aside, blob);
    } finally {
      rmSync(aside, { force: true });
    }
    const entry: SnapshotRecord = { format: SNAPSHOT_FORMAT, node: process.version, execPath: process.execPath, flags, bundleId: id, blob: identity };
    writeFileSync(`${record}.${process.pid}`, JSON.stringify(entry, null, 1) + '\n');
    renameSync(`${record}.${process.pid}`, record);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The build's step: a snapshot that cannot be made is a warning, and its old blob goes. */
export function makeGuestSnapshots(bundles: string[]): void {
  for (const bundle of bundles) {
    try {
      makeGuestSnapshot(bundle);
    } catch (e) {
      console.warn(`guest snapshot for ${bundle} not made: ${(e as Error).message}`);
      rmSync(snapshotFiles(bundle).blob, { force: true });
    }
  }
}

/**
 * After an install (scripts/guest-snapshot-install.ts): the blob for `dist`'s guest, made by this
 * node, unless it is there already or this is a source checkout (whose build makes it). Says
 * what it did; throws when it could not.
 */
export function installGuestSnapshot(dist: string): string {
  const bundle = join(dist, 'guest.cjs');
  if (existsSync(join(dist, '..', 'scripts', 'build.mjs'))) return 'a source checkout: its build makes the blob';
  if (!existsSync(bundle)) return 'no guest bundle';
  if ('blob' in usableSnapshot(bundle, snapshotFlags())) return 'the blob is there already';
  makeGuestSnapshot(bundle);
  return 'made';
}
