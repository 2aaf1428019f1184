// snapshot -l (and 10.0's default action) against both oracles: qcow2 with and without
// snapshots, formats without snapshots (listed as none), -U, --image-opts, a missing file or
// backing file, and qemu's usage errors. Mutating actions on formats without snapshots too.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { VERSIONS, runQemu } from '../helpers/oracles.ts';
import { PairDirs, assertSameOutput, buildImage } from './harness.ts';

const dirs = new PairDirs();
const files: Record<string, Uint8Array> = {};

before(() => {
  files['plain.qcow2'] = buildImage(dirs.root, 'plain.qcow2', ['-f', 'qcow2', '1M']);
  const snaps = join(dirs.root, 'snaps.qcow2');
  buildImage(dirs.root, 'snaps.qcow2', ['-f', 'qcow2', '1M'], ['write -P 7 0 4k']);
  // Names that need padding (C pads by bytes, not characters), written by both oracles.
  for (const [v, name] of [['7.2', 'first'], ['10.0', 'a name longer than the column'], ['10.0', 'ünïcödé']] as const) {
    assert.equal(runQemu(v, ['snapshot', '-c', name, snaps]).status, 0);
  }
  files['snaps.qcow2'] = new Uint8Array(readFileSync(snaps));
  for (const format of ['vmdk', 'qed', 'raw']) files[`x.${format}`] = buildImage(dirs.root, `x.${format}`, ['-f', format, '1M']);
  const hostile = join(dirs.root, 'hostile.qcow2');
  buildImage(dirs.root, 'hostile.qcow2', ['-f', 'qcow2', '1M']);
  assert.equal(runQemu('10.0', ['snapshot', '-c', 'tab\there\x1b[2J', hostile]).status, 0);
  files['hostile.qcow2'] = new Uint8Array(readFileSync(hostile));
  // A snapshot written before qemu stored instruction counts: 16 bytes of extra data.
  const old = readFileSync(snaps);
  const table = Number(old.readBigUInt64BE(64));
  const entry = Buffer.from(old.subarray(table, table + 40 + 24 + old.readUInt16BE(table + 12) + old.readUInt16BE(table + 14)));
  entry.writeUInt32BE(16, 36);
  Buffer.concat([entry.subarray(0, 56), entry.subarray(64)]).copy(old, table);
  old.writeUInt32BE(1, 60);
  files['old.qcow2'] = new Uint8Array(old);
  files['orphan.qcow2'] = buildImage(dirs.root, 'orphan.qcow2', ['-f', 'qcow2', '-u', '-b', 'gone.qcow2', '-F', 'qcow2', '1M']);
});
after(() => dirs.remove());

const CASES: [string, string[], string[]?][] = [
  ['plain.qcow2', ['snapshot', '-l', 'plain.qcow2']],
  ['snaps.qcow2', ['snapshot', '-l', 'snaps.qcow2']],
  ['snaps.qcow2', ['snapshot', 'snaps.qcow2']],
  ['snaps.qcow2', ['snapshot', '-U', '-l', 'snaps.qcow2']],
  ['snaps.qcow2', ['snapshot', '-q', '-l', '-f', 'qcow2', 'snaps.qcow2']],
  ['snaps.qcow2', ['snapshot', '-l', '--image-opts', 'driver=qcow2,file.filename=snaps.qcow2']],
  ['snaps.qcow2', ['snapshot', '-l', '-f', 'bogus', 'snaps.qcow2']],
  ['snaps.qcow2', ['snapshot', '-c', 'x', '--image-opts', 'driver=qcow2,file.filename=snaps.qcow2,read-only=on']],
  ['snaps.qcow2', ['snapshot', '-d', 'first', '--image-opts', 'driver=qcow2,file.filename=snaps.qcow2,force-share=on']],
  ['snaps.qcow2', ['snapshot', '-a', 'first', '--image-opts', 'driver=qcow2,file.filename=snaps.qcow2,read-only=bogus']],
  ['snaps.qcow2', ['snapshot', '-l', 'missing.qcow2']],
  ['snaps.qcow2', ['snapshot', '-l', '-c', 'x', 'snaps.qcow2']],
  ['snaps.qcow2', ['snapshot', '-l', 'snaps.qcow2', 'snaps.qcow2']],
  ['snaps.qcow2', ['snapshot', '-l']],
  ['snaps.qcow2', ['snapshot', '-U', 'snaps.qcow2']],
  ['orphan.qcow2', ['snapshot', '-l', 'orphan.qcow2']],
  ['old.qcow2', ['snapshot', '-l', 'old.qcow2']],
  ['x.vmdk', ['snapshot', '-l', 'x.vmdk']],
  ['x.vmdk', ['snapshot', '-c', 'x', 'x.vmdk']],
  ['x.vmdk', ['snapshot', '-a', 'x', 'x.vmdk']],
  ['x.qed', ['snapshot', '-l', 'x.qed']],
  ['x.qed', ['snapshot', '-c', 'x', 'x.qed']],
  ['x.raw', ['snapshot', '-l', '-f', 'raw', 'x.raw']],
  ['x.raw', ['snapshot', '-a', 'x', '-f', 'raw', 'x.raw']],
  // A probed raw image opened for writing: qemu warns (twice for -a, which reopens it).
  ['x.raw', ['snapshot', '-a', 'x', 'x.raw'], ['--unsafe-quirks']],
  ['x.raw', ['snapshot', '-c', 'x', 'x.raw'], ['--unsafe-quirks']],
];

for (const [file, args, instarArgs] of CASES) {
  test(`qemu-img ${args.join(' ')}`, async () => {
    for (const v of VERSIONS) {
      const r = await dirs.run(v, { [file]: files[file] }, file, args, { instarArgs });
      assertSameOutput(r, `${v} ${args.join(' ')}`);
      assert.ok(r.instarFile.equals(r.qemuFile), `${v}: the file is left as qemu leaves it`);
    }
  });
}

test('a snapshot without an instruction count lists as each version lists it', async () => {
  const r = await dirs.run('10.0', { 'old.qcow2': files['old.qcow2'] }, 'old.qcow2', ['snapshot', '-l', 'old.qcow2']);
  assert.match(r.qemu.stdout, / --\n$/);
  assert.equal(r.instar.stdout, r.qemu.stdout);
});

test('snapshot -l through the real sandbox (both profiles)', async () => {
  for (const v of VERSIONS) {
    const r = await dirs.run(v, { 'snaps.qcow2': files['snaps.qcow2'] }, 'snaps.qcow2', ['snapshot', '-l', 'snaps.qcow2'], { sandboxed: true });
    assertSameOutput(r, `${v} sandboxed`);
    assert.match(r.instar.stdout, /^Snapshot list:\n/);
  }
});

test('snapshot -l escapes control characters of a name (qemu prints them raw: a deliberate difference)', async () => {
  const r = await dirs.run('10.0', { 'hostile.qcow2': files['hostile.qcow2'] }, 'hostile.qcow2', ['snapshot', '-l', 'hostile.qcow2']);
  assert.equal(r.instar.status, 0);
  assert.ok(r.qemu.stdout.includes('tab\there\x1b[2J'), 'qemu prints the name as stored');
  assert.ok(r.instar.stdout.includes('tab\\x09here\\x1b[2J'), r.instar.stdout);
  assert.equal(r.instar.stdout.replace(/tab\\x09here\\x1b\[2J */, 'NAME '), r.qemu.stdout.replace(/tab\there\x1b\[2J */, 'NAME '));
});
