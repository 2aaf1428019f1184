// A commit whose job fails growing the base (a format qemu cannot truncate, smaller than the top:
// "Block job failed: Operation not supported") still ends with qemu's close of the top, which
// stores the top's persistent bitmaps anew (new bitmap table and directory); instar left the top
// as it was (found by the mutating hunt, campaign 8700000 case 21). Both oracles, byte for byte.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { VERSIONS, runQemu } from '../helpers/oracles.ts';
import { TwinDirs, assertSameOutcome } from '../rebase/harness.ts';
import { ImageBuilder } from './harness.ts';

const builder = new ImageBuilder();
const twins = new TwinDirs();
let files: Record<string, Uint8Array>;

before(() => {
  const chain = builder.chain([
    { name: 'base.vhdx', create: ['-f', 'vhdx'], size: '4M', writes: ['write -P 1 0 64k'], format: 'vhdx' },
    { name: 'top.qcow2', create: ['-f', 'qcow2', '-o', 'cluster_size=32768', '-b', 'base.vhdx', '-F', 'vhdx'], size: '4M', writes: ['write -P 2 1M 100k'] },
  ]);
  const dir = join(builder.root, 'grown');
  mkdirSync(dir);
  for (const [name, bytes] of Object.entries(chain)) writeFileSync(join(dir, name), bytes);
  assert.equal(runQemu('7.2', ['bitmap', '--add', 'top.qcow2', 'b0'], { cwd: dir }).status, 0);
  assert.equal(runQemu('7.2', ['resize', '-q', 'top.qcow2', '+64M'], { cwd: dir }).status, 0);
  files = { 'base.vhdx': chain['base.vhdx'], 'top.qcow2': readFileSync(join(dir, 'top.qcow2')) };
});
after(() => {
  builder.remove();
  twins.remove();
});

for (const version of VERSIONS) {
  test(`a commit that fails growing a vhdx base stores the top's bitmaps as qemu-img ${version}'s close does`, () => {
    for (const args of [['commit', '-t', 'unsafe', 'top.qcow2'], ['commit', '-p', '-d', 'top.qcow2']]) {
      const r = twins.run(version, files, args);
      assertSameOutcome(r, Object.keys(files), `${version}: ${args.join(' ')}`);
      assert.equal(r.qemu.status, 1);
      assert.match(r.qemu.stderr, /Block job failed: Operation not supported/);
      assert.ok(!readFileSync(join(r.qemuDir, 'top.qcow2')).equals(files['top.qcow2']), 'qemu-img stored the bitmaps anew');
    }
  });
}
