// A qcow2 whose bitmaps extension lost its autoclear bit (a program without bitmap support wrote
// it): every qemu-img open warns that the bitmaps are stale, then prints a line with no newline
// after it; a writable open drops the extension. instar the same, against 7.2 and 10.0: output,
// exit status and the file after the command.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { VERSIONS, runQemu } from '../helpers/oracles.ts';
import { RepairDirs, assertSameRun } from '../check/repair-harness.ts';

const dirs = new RepairDirs();
let stale: Buffer;

before(() => {
  const path = join(dirs.root, 'stale.qcow2');
  assert.equal(runQemu('10.0', ['create', '-q', '-f', 'qcow2', path, '4M']).status, 0);
  assert.equal(runQemu('10.0', ['bitmap', '--add', path, 'b0']).status, 0);
  assert.equal(runQemu('10.0', ['-c', 'write -P 1 0 64k', path], {}, 'qemu-io').status, 0);
  stale = readFileSync(path);
  // The autoclear bits (header offset 88): bit 0 is the bitmaps extension's.
  stale.writeBigUInt64BE(stale.readBigUInt64BE(88) & ~1n, 88);
});
after(() => dirs.remove());

const COMMANDS = [
  ['info', 'x.qcow2'],
  ['map', '--output=json', 'x.qcow2'],
  ['check', 'x.qcow2'],
  ['measure', '-O', 'qcow2', 'x.qcow2'],
  ['convert', '-O', 'raw', 'x.qcow2', 'out.raw'],
  // Two opens of the image: qemu warns at each.
  ['compare', 'x.qcow2', 'x.qcow2'],
  ['bitmap', '--add', 'x.qcow2', 'b1'],
  ['rebase', '-u', '-b', '', 'x.qcow2'],
  ['amend', '-o', 'lazy_refcounts=on', 'x.qcow2'],
];

test('every command warns of the stale bitmaps once per open, as qemu-img does, and writes what it writes', () => {
  for (const v of VERSIONS) {
    for (const [i, args] of COMMANDS.entries()) {
      const r = dirs.run(v, 'x.qcow2', stale, args, { sandboxed: i === 0 || i === 5, viaEnv: true });
      const label = `qemu-img ${v} ${args.join(' ')}`;
      assert.match(r.qemu.stderr, /^qemu-img: warning: a program lacking bitmap support modified this file, so all bitmaps are now considered inconsistent\nSome clusters may be leaked, run 'qemu-img check -r' on the image file to fix\./, label);
      assertSameRun(r, label);
      assert.ok(r.instarFile.equals(r.qemuFile), `${label}: the files differ`);
    }
  }
});
