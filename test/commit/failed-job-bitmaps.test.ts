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

/**
 * The same failure where qemu's qcow2 truncate refuses with ENOTSUP: a compat=0.10 base with an
 * internal snapshot cannot be resized ("Can't resize a v2 image which has snapshots"), and the
 * job reports only its errno (found by the mutating hunt, campaign 8060000 case 38: instar printed
 * the truncate's own words). The top's bitmaps stored anew as above; the base untouched.
 */
test('a commit that fails growing a v2 qcow2 base with a snapshot fails as qemu-img\'s job does', () => {
  const dir = join(builder.root, 'v2-snapshot');
  mkdirSync(dir);
  const ok = (args: string[], tool: 'qemu-img' | 'qemu-io' = 'qemu-img') => assert.equal(runQemu('7.2', args, { cwd: dir }, tool).status, 0, args.join(' '));
  ok(['create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', 'b.qcow2', '4M']);
  ok(['-c', 'write -P 1 0 64k', 'b.qcow2'], 'qemu-io');
  ok(['snapshot', '-c', 's1', 'b.qcow2']);
  ok(['create', '-q', '-f', 'qcow2', '-b', 'b.qcow2', '-F', 'qcow2', 't.qcow2', '8M']);
  ok(['-c', 'write -P 2 6M 64k', 't.qcow2'], 'qemu-io');
  ok(['bitmap', '--add', 't.qcow2', 'bm']);
  const chain = { 'b.qcow2': readFileSync(join(dir, 'b.qcow2')), 't.qcow2': readFileSync(join(dir, 't.qcow2')) };
  for (const version of VERSIONS) {
    for (const args of [['commit', 't.qcow2'], ['commit', '-p', 't.qcow2']]) {
      const r = twins.run(version, chain, args);
      assertSameOutcome(r, Object.keys(chain), `${version}: ${args.join(' ')}`);
      assert.equal(r.qemu.stderr, 'qemu-img: Block job failed: Operation not supported\n');
      assert.ok(readFileSync(join(r.qemuDir, 'b.qcow2')).equals(chain['b.qcow2']), 'the base untouched');
    }
  }
});
