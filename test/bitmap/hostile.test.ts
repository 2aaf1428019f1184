// Hostile bitmap structures: directory entries whose tables or data clusters point at qcow2
// metadata, at each other, or far past the end of the file. qemu either refuses to open such an
// image (instar then says the same, byte for byte) or would free metadata still in use when it
// stores the bitmaps again: instar refuses with one line and writes nothing.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { VERSIONS, runInstar } from '../helpers/oracles.ts';
import { compareBitmap, Workspace } from './harness.ts';
import { buildFixtures, directoryOffset, type Fixtures } from './fixtures.ts';
import { runCommandLine } from '../../src/cli/run.ts';

const ws = new Workspace();
let files: Fixtures;
before(() => { files = buildFixtures(ws); });
after(() => ws.remove());

/** data.qcow2 with `fn` applied to its bytes; `entry(i)` is the offset of directory entry i. */
function patched(fn: (b: Buffer, entry: (i: number) => number) => void): Buffer {
  const b = Buffer.from(files['data.qcow2']);
  const dir = directoryOffset(b);
  const entry = (i: number) => {
    let at = dir;
    for (let n = 0; n < i; n++) at += Math.ceil((24 + b.readUInt16BE(at + 18)) / 8) * 8;
    return at;
  };
  fn(b, entry);
  return b;
}

const tableOf = (b: Buffer, entry: number) => Number(b.readBigUInt64BE(entry));
/** The first data cluster of the bitmap whose directory entry is at `entry`. */
const firstData = (b: Buffer, entry: number) => {
  const table = tableOf(b, entry);
  for (let at = table; ; at += 8) if (b.readBigUInt64BE(at) !== 0n) return at;
};
const l1Offset = (b: Buffer) => b.readBigUInt64BE(40);
const refcountTable = (b: Buffer) => b.readBigUInt64BE(48);

/** Refused by instar although qemu would open it: each writes nothing and says why in one line. */
const REFUSED: [string, () => Buffer][] = [
  ['a data cluster is the L1 table', () => patched((b, e) => b.writeBigUInt64BE(l1Offset(b), firstData(b, e(0))))],
  ['a data cluster is the refcount table', () => patched((b, e) => b.writeBigUInt64BE(refcountTable(b), firstData(b, e(0))))],
  ['two bitmaps share a table', () => patched((b, e) => b.writeBigUInt64BE(b.readBigUInt64BE(e(0)), e(2)))],
  ['two bitmaps share a data cluster', () => patched((b, e) => b.writeBigUInt64BE(b.readBigUInt64BE(firstData(b, e(0))), firstData(b, e(1))))],
  ['a table is the bitmap directory', () => patched((b, e) => { b.writeBigUInt64BE(BigInt(directoryOffset(b)), e(2)); b.writeUInt32BE(3, e(2) + 12); })],
  ['a data cluster lies far past the end of the file', () => patched((b, e) => b.writeBigUInt64BE(1n << 40n, firstData(b, e(0))))],
];

/** An in-use bitmap's table far past the end of the file: kept as it is, as qemu keeps it. */
const farTable = () => patched((b, e) => { b.writeBigUInt64BE(1n << 40n, e(2)); b.writeUInt32BE(3, e(2) + 12); });

/** Refused by qemu's own open: instar's words must be qemu's. */
const OPEN_ERRORS: [string, () => Buffer][] = [
  ['a table is the header', () => patched((b, e) => b.writeBigUInt64BE(0n, e(0)))],
  ['a huge table', () => patched((b, e) => b.writeUInt32BE(0x8000000, e(0) + 8))],
  ['a directory past the end of the file', () => patched((b) => b.writeBigUInt64BE(1n << 40n, directoryOffset(b) === 0 ? 0 : findExt(b) + 16))],
  ['a broken directory entry', () => patched((b, e) => b.writeUInt16BE(0xffff, e(1) + 18))],
];

function findExt(b: Buffer): number {
  for (let at = 112; ;) {
    if (b.readUInt32BE(at) === 0x23852875) return at + 8;
    at += 8 + Math.ceil(b.readUInt32BE(at + 4) / 8) * 8;
  }
}

async function instarInProcess(args: string[], cwd: string): Promise<{ status: number; stderr: string }> {
  let stderr = '';
  const previous = process.cwd();
  process.chdir(cwd);
  try {
    const status = await runCommandLine(['--sandbox=none', ...args], { out: () => undefined, err: (t) => { stderr += t; }, env: process.env, cwd, argv1: 'qemu-img' });
    return { status, stderr };
  } finally {
    process.chdir(previous);
  }
}

test('bitmaps that overlap metadata or each other are refused, nothing written', async () => {
  for (const [what, build] of REFUSED) {
    for (const args of [['--add', 'h.qcow2', 'e'], ['--remove', 'h.qcow2', 'b'], ['--clear', 'h.qcow2', 'd']]) {
      const bytes = build();
      const [, dir] = ws.pair({ 'h.qcow2': bytes });
      const r = await instarInProcess(['bitmap', ...args], dir);
      assert.equal(r.status, 1, `${what}: ${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /^qemu-img: instar refuses this qcow2 image: [^\n]*nothing was written\n$/, what);
      assert.ok(readFileSync(`${dir}/h.qcow2`).equals(bytes), `${what}: the file is unchanged`);
    }
  }
});

test('removing an in-use bitmap whose table is past the end of the file is refused', async () => {
  const bytes = farTable();
  const [, dir] = ws.pair({ 'h.qcow2': bytes });
  const r = await instarInProcess(['bitmap', '--remove', 'h.qcow2', 'd'], dir);
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /^qemu-img: instar refuses this qcow2 image: [^\n]*nothing was written\n$/);
  assert.ok(readFileSync(`${dir}/h.qcow2`).equals(bytes));
});

test('a -b source outside the allowed paths is refused before anything is written', async () => {
  const bytes = Buffer.from(files['data.qcow2']);
  const [, dir] = ws.pair({ 'h.qcow2': bytes });
  // src.qcow2 lies in the workspace root, two levels above the image's directory.
  const r = await instarInProcess(['bitmap', '-b', '../../src.qcow2', '--merge', 's', 'h.qcow2', 'b'], dir);
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /^qemu-img: Could not open '\.\.\/\.\.\/src\.qcow2': .*outside the allowed paths.*\n$/);
  assert.ok(readFileSync(`${dir}/h.qcow2`).equals(bytes), 'the image is unchanged');
});

test('a hostile image is refused through the real sandbox too', () => {
  const bytes = REFUSED[0][1]();
  const [, dir] = ws.pair({ 'h.qcow2': bytes });
  const r = runInstar(['bitmap', '--add', 'h.qcow2', 'e'], { cwd: dir, timeoutMs: 20_000 });
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /^qemu-img: instar refuses this qcow2 image: the data of bitmap 'b' overlaps the L1 table; nothing was written\n$/);
  assert.ok(readFileSync(`${dir}/h.qcow2`).equals(bytes));
});

for (const version of VERSIONS) {
  test(`bitmap structures qemu-img ${version} cannot open fail with its words`, async () => {
    for (const [, build] of OPEN_ERRORS) {
      const bytes = build();
      await compareBitmap(ws, version, { 'h.qcow2': bytes }, ['--add', 'h.qcow2', 'e']);
    }
    for (const args of [['--add', 'h.qcow2', 'e'], ['--clear', 'h.qcow2', 'b'], ['--enable', 'h.qcow2', 'd']]) {
      await compareBitmap(ws, version, { 'h.qcow2': farTable() }, args);
    }
  });
}
