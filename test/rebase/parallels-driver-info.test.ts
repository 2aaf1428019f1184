// rebase on a parallels image: qemu 8.2+ asks the driver for its (sub)cluster size right after the
// -c and -F checks, in both modes, and parallels' driver has no answer: "could not get block driver
// info" (before a new backing file opens, before instar's own path-policy refusal); qemu 7.2 goes
// on to its usual failures. Against both oracles: output, exit status and the file.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { VERSIONS, runQemu } from '../helpers/oracles.ts';
import { RepairDirs, assertSameRun } from '../check/repair-harness.ts';

const dirs = new RepairDirs();
let image: Buffer;

before(() => {
  const path = join(dirs.root, 'p.parallels');
  assert.equal(runQemu('7.2', ['create', '-q', '-f', 'parallels', path, '4M']).status, 0);
  assert.equal(runQemu('7.2', ['-f', 'parallels', '-c', 'write -P 0x11 0 1M', path], {}, 'qemu-io').status, 0);
  image = readFileSync(path);
});
after(() => dirs.remove());

const LINES = [
  ['rebase', '-u', '-b', 'b.raw', '-F', 'raw', 'x.parallels'],
  ['rebase', '-u', '-b', '', 'x.parallels'],
  ['rebase', '-b', 'b.raw', '-F', 'raw', 'x.parallels'],
  ['rebase', '-b', 'missing.raw', '-F', 'raw', 'x.parallels'],
  ['rebase', '-u', '-b', 'b.raw', '-F', 'nosuchformat', 'x.parallels'],
];

test('rebase on a parallels image: qemu 10.0 cannot get its driver info, 7.2 fails later; the same words and file', () => {
  for (const v of VERSIONS) {
    for (const [i, args] of LINES.entries()) {
      const r = dirs.run(v, 'x.parallels', image, args, { viaEnv: true, sandboxed: i === 0, files: { 'b.raw': Buffer.alloc(4 * 1024 * 1024) } });
      const label = `${v} ${args.join(' ')}`;
      assertSameRun(r, label);
      assert.ok(r.instarFile.equals(r.qemuFile), `${label}: the files differ`);
    }
  }
  const r = dirs.run('10.0', 'x.parallels', image, LINES[0], { viaEnv: true });
  assert.equal(r.qemu.stderr, 'qemu-img: could not get block driver info\n');
});

test('rebase onto a name instar refuses: qemu 10.0\'s driver-info failure still comes first', () => {
  const r = dirs.run('10.0', 'x.parallels', image, ['rebase', '-b', '/etc/passwd', '-F', 'raw', 'x.parallels'], { viaEnv: true });
  assertSameRun(r, '10.0 rebase -b /etc/passwd');
  assert.ok(r.instarFile.equals(image), 'unchanged');
});
