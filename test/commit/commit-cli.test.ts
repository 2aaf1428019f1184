// qemu-img commit, differential: the same chain committed by qemu-img (7.2 and 10.0) and by
// instar in twin directories; stdout (repeated progress lines collapsed: qemu prints one per poll
// of its job loop), stderr, exit status, then the files. `exact` files must be byte-identical to
// qemu's; the others (where qemu's mirror job allocates in an order its timing decides) must read
// the same guest data and pass qemu-img check.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { VERSIONS, runQemu } from '../helpers/oracles.ts';
import { type TwinRun } from '../rebase/harness.ts';
import { ImageBuilder, assertCheckClean, collapseProgress, sameDisk } from './harness.ts';
import { TwinDirs } from '../check/fast-dirs.ts';
// In the long tier its unsandboxed instar runs launch the built CLI as before (check/instar-sync.ts).
import { LONG } from '../helpers/long.ts';

const builder = new ImageBuilder();
const twins = new TwinDirs();
const chains: Record<string, Record<string, Uint8Array>> = {};

before(() => {
  // qcow2 base: a cluster written in place, new clusters and L2 entries, a zero cluster.
  chains.qcow2 = builder.chain([
    { name: 'b.qcow2', create: ['-f', 'qcow2'], writes: ['write -P 1 0 64k', 'write -P 2 1M 64k'] },
    { name: 't.qcow2', create: ['-f', 'qcow2', '-b', 'b.qcow2', '-F', 'qcow2'], writes: ['write -P 3 0 64k', 'write -P 4 2M 192k', 'write -z 3M 64k'] },
  ]);
  // A raw base under two qcow2 levels; writes not aligned to clusters.
  chains.raw = builder.chain([
    { name: 'r.raw', create: ['-f', 'raw'], writes: ['write -P 1 0 64k'], format: 'raw' },
    { name: 'm.qcow2', create: ['-f', 'qcow2', '-b', 'r.raw', '-F', 'raw'], writes: ['write -P 5 1M 64k'] },
    { name: 't.qcow2', create: ['-f', 'qcow2', '-b', 'm.qcow2', '-F', 'qcow2'], writes: ['write -P 3 32k 64k', 'write -z 2M 128k'] },
  ]);
  // 512-byte clusters over a compat=0.10 base of 4 KiB clusters that has a backing file itself.
  chains.small = builder.chain([
    { name: 'a.qcow2', create: ['-f', 'qcow2'], writes: ['write -P 7 0 1M'] },
    { name: 'b.qcow2', create: ['-f', 'qcow2', '-o', 'cluster_size=4096,compat=0.10', '-b', 'a.qcow2', '-F', 'qcow2'], writes: ['write -P 8 4k 4k'] },
    { name: 't.qcow2', create: ['-f', 'qcow2', '-o', 'cluster_size=512', '-b', 'b.qcow2', '-F', 'qcow2'], writes: ['write -P 9 512 1k', 'write -P 6 8k 512', 'write -z 64k 4k', 'write -P 5 3M 8k'] },
  ]);
  // Bases smaller than the top: qemu's commit job grows them first.
  chains.grow = builder.chain([
    { name: 'b.qcow2', create: ['-f', 'qcow2'], size: '1M', writes: ['write -P 2 0 4k'] },
    { name: 'r.raw', create: ['-f', 'raw'], size: '1M' },
    { name: 't.qcow2', create: ['-f', 'qcow2', '-b', 'b.qcow2', '-F', 'qcow2'], writes: ['write -P 1 3M 4k'] },
    { name: 'u.qcow2', create: ['-f', 'qcow2', '-b', 'r.raw', '-F', 'raw'], writes: ['write -P 1 3M 4k'] },
  ]);
  // A base smaller than the top with a longer backing file of its own: qemu's block layer zeroes
  // the grown area (and the rest of the base's old last cluster) before the commit copies
  // (found by the generative hunt: instar refused to grow such a base).
  chains.growOverBacking = builder.chain([
    { name: 'bb.qcow2', create: ['-f', 'qcow2'], size: '8M', writes: ['write -P 7 0 8M'] },
    { name: 'b.qcow2', create: ['-f', 'qcow2', '-b', 'bb.qcow2', '-F', 'qcow2'], size: '1000k', writes: ['write -P 1 0 64k'] },
    { name: 't.qcow2', create: ['-f', 'qcow2', '-b', 'b.qcow2', '-F', 'qcow2'], size: '6M', writes: ['write -P 2 5M 64k', 'write -P 3 64k 64k'] },
  ]);
  // VMDK bases: qemu's mirror writes through the vmdk driver (new grains from the base's parent,
  // zeroed grains where the base has them, a new random CID): the base reads the same as qemu's
  // (the hunt found instar refusing every vmdk base).
  chains.vmdk = builder.chain([
    { name: 'b.vmdk', create: ['-f', 'vmdk'], writes: ['write -P 1 0 128k', 'write -P 5 3M 64k'], format: 'vmdk' },
    { name: 't.vmdk', create: ['-f', 'vmdk', '-b', 'b.vmdk', '-F', 'vmdk'], writes: ['write -P 2 64k 4k', 'write -P 3 1M 100k', 'write -z 3M 64k'], format: 'vmdk' },
    { name: 't.qcow2', create: ['-f', 'qcow2', '-b', 'b.vmdk', '-F', 'vmdk'], writes: ['write -P 2 64k 4k', 'write -P 3 1M 100k', 'write -z 3M 64k'] },
    { name: 'z.vmdk', create: ['-f', 'vmdk', '-o', 'zeroed_grain=on'], writes: ['write -P 1 0 1M'], format: 'vmdk' },
    { name: 'tz.qcow2', create: ['-f', 'qcow2', '-b', 'z.vmdk', '-F', 'vmdk'], writes: ['write -z 0 256k', 'write -P 9 512k 8k'] },
  ]);
  // Bases smaller than the top in formats qemu cannot grow: its commit job fails before any
  // write (the hunt found instar refusing them in its own words).
  chains.noGrow = builder.chain([
    { name: 'b.vhdx', create: ['-f', 'vhdx'], size: '2M' },
    { name: 'b.vhd', create: ['-f', 'vpc'], size: '2M' },
    { name: 'x.qcow2', create: ['-f', 'qcow2', '-b', 'b.vhdx', '-F', 'vhdx'], writes: ['write -P 2 3M 64k'] },
    { name: 'p.qcow2', create: ['-f', 'qcow2', '-b', 'b.vhd', '-F', 'vpc'], writes: ['write -P 2 3M 64k'] },
  ]);
  // A dirty top (lazy refcounts, qemu-io killed after its writes): qemu's writable open repairs
  // its refcounts first, printing the check's lines, then commits.
  chains.dirty = builder.chain([
    { name: 'b.qcow2', create: ['-f', 'qcow2'], writes: ['write -P 1 0 64k'] },
    { name: 't.qcow2', create: ['-f', 'qcow2', '-o', 'lazy_refcounts=on', '-b', 'b.qcow2', '-F', 'qcow2'] },
  ]);
  const dir = mkdtempSync(join(builder.root, 'dirty-'));
  for (const [name, bytes] of Object.entries(chains.dirty)) writeFileSync(join(dir, name), bytes);
  assert.equal(runQemu('10.0', ['-c', 'write -P 3 0 64k', '-c', 'write -P 4 1M 64k', '-c', 'sigraise 9', 't.qcow2'], { cwd: dir }, 'qemu-io').signal, 'SIGKILL');
  chains.dirty['t.qcow2'] = readFileSync(join(dir, 't.qcow2'));
  assert.equal(Buffer.from(chains.dirty['t.qcow2']).readBigUInt64BE(72) & 1n, 1n, 'the top is dirty');
  // Persistent bitmaps in a top that has no base to commit to: qemu-img opened it for writing
  // before it failed, and its close stores the bitmaps anew (found by the generative hunt).
  chains.bitmaps = builder.chain([
    { name: 'b.qcow2', create: ['-f', 'qcow2'], writes: ['write -P 1 0 64k'] },
    { name: 't.qcow2', create: ['-f', 'qcow2', '-b', 'b.qcow2', '-F', 'qcow2'], writes: ['write -P 3 0 64k'] },
    { name: 'lone.qcow2', create: ['-f', 'qcow2'], writes: ['write -P 5 0 64k'] },
  ]);
  const bdir = mkdtempSync(join(builder.root, 'bitmaps-'));
  for (const [name, bytes] of Object.entries(chains.bitmaps)) writeFileSync(join(bdir, name), bytes);
  for (const name of ['t.qcow2', 'lone.qcow2']) {
    assert.equal(runQemu('7.2', ['bitmap', '--add', name, 'b0'], { cwd: bdir }).status, 0);
    assert.equal(runQemu('7.2', ['-c', 'write -P 7 1M 64k', name], { cwd: bdir }, 'qemu-io').status, 0);
    chains.bitmaps[name] = readFileSync(join(bdir, name));
  }
});
after(() => {
  builder.remove();
  twins.remove();
});

function assertSameRun(r: TwinRun, label: string): void {
  assert.equal(collapseProgress(r.instar.stdout), collapseProgress(r.qemu.stdout), `${label}: stdout`);
  assert.equal(r.instar.stderr, r.qemu.stderr, `${label}: stderr`);
  assert.equal(r.instar.status, r.qemu.status, `${label}: status (instar stderr: ${r.instar.stderr})`);
}

interface Case {
  chain: string;
  args: string[];
  /** Files that must be byte-identical to qemu's; every other file of the chain reads the same. */
  exact: string[];
  sandboxed?: boolean;
  /** Failures both releases word alike run under one of them (time is short). */
  only?: '7.2' | '10.0';
}

const CASES: Case[] = [
  { chain: 'qcow2', args: ['commit', 't.qcow2'], exact: ['t.qcow2', 'b.qcow2'], sandboxed: true },
  { chain: 'qcow2', args: ['commit', '-p', '-f', 'qcow2', 't.qcow2'], exact: ['t.qcow2', 'b.qcow2'] },
  { chain: 'qcow2', args: ['commit', '-q', '-d', 't.qcow2'], only: '10.0', exact: ['t.qcow2', 'b.qcow2'] },
  { chain: 'qcow2', args: ['commit', '--image-opts', 'driver=qcow2,file.filename=t.qcow2'], only: '7.2', exact: ['t.qcow2', 'b.qcow2'] },
  { chain: 'qcow2', args: ['commit', '--object', 'secret,id=s0,data=x', '-r', '1M', '-t', 'writeback', 't.qcow2'], only: '10.0', exact: ['t.qcow2', 'b.qcow2'] },
  { chain: 'raw', args: ['commit', 't.qcow2'], exact: ['t.qcow2', 'r.raw'] },
  { chain: 'raw', args: ['commit', '-b', 'r.raw', 't.qcow2'], exact: ['t.qcow2', 'm.qcow2', 'r.raw'], sandboxed: true },
  { chain: 'raw', args: ['commit', '-p', '-b', './m.qcow2', 't.qcow2'], only: '10.0', exact: ['t.qcow2', 'r.raw'] },
  { chain: 'small', args: ['commit', 't.qcow2'], exact: ['t.qcow2', 'a.qcow2'] },
  { chain: 'small', args: ['commit', '-b', 'a.qcow2', 't.qcow2'], only: '7.2', exact: ['t.qcow2', 'b.qcow2'] },
  { chain: 'grow', args: ['commit', 't.qcow2'], exact: ['t.qcow2', 'b.qcow2', 'r.raw', 'u.qcow2'] },
  { chain: 'dirty', args: ['commit', 't.qcow2'], exact: ['t.qcow2', 'b.qcow2'], sandboxed: true },
  { chain: 'grow', args: ['commit', 'u.qcow2'], only: '10.0', exact: ['t.qcow2', 'b.qcow2', 'r.raw', 'u.qcow2'] },
  // qemu's mirror allocates the copied clusters in an order of its own here: the base reads the same.
  { chain: 'growOverBacking', args: ['commit', 't.qcow2'], exact: ['t.qcow2', 'bb.qcow2'] },
  { chain: 'growOverBacking', args: ['commit', '-p', '-b', 'b.qcow2', '-d', 't.qcow2'], exact: ['t.qcow2', 'bb.qcow2'], sandboxed: true },
  { chain: 'vmdk', args: ['commit', 't.vmdk'], exact: ['t.vmdk', 't.qcow2', 'z.vmdk', 'tz.qcow2'] },
  { chain: 'vmdk', args: ['commit', 't.qcow2'], exact: ['t.qcow2', 't.vmdk'], sandboxed: true },
  { chain: 'vmdk', args: ['commit', '-d', 'tz.qcow2'], exact: ['tz.qcow2', 'b.vmdk'] },
  // Failures: nothing may change.
  { chain: 'noGrow', args: ['commit', '-p', '-d', 'x.qcow2'], exact: ['b.vhdx', 'b.vhd', 'x.qcow2', 'p.qcow2'], sandboxed: true },
  { chain: 'noGrow', args: ['commit', 'p.qcow2'], exact: ['b.vhdx', 'b.vhd', 'x.qcow2', 'p.qcow2'] },
  { chain: 'raw', args: ['commit', '-b', 'nope', 't.qcow2'], exact: ['t.qcow2', 'm.qcow2', 'r.raw'] },
  { chain: 'raw', args: ['commit', '-p', '-b', 'nope', 't.qcow2'], only: '7.2', exact: ['t.qcow2', 'm.qcow2', 'r.raw'] },
  { chain: 'raw', args: ['commit', '-f', 'raw', 'r.raw'], only: '10.0', exact: ['t.qcow2', 'm.qcow2', 'r.raw'] },
  { chain: 'raw', args: ['commit', '-f', 'foo', 't.qcow2'], only: '7.2', exact: ['t.qcow2', 'm.qcow2', 'r.raw'] },
  { chain: 'raw', args: ['commit', '-r', 'x', 't.qcow2'], exact: ['t.qcow2', 'm.qcow2', 'r.raw'] },
  { chain: 'raw', args: ['commit', '-r', '99999E', 't.qcow2'], exact: ['t.qcow2', 'm.qcow2', 'r.raw'] },
  { chain: 'raw', args: ['commit', '-t', 'foo', 't.qcow2'], only: '10.0', exact: ['t.qcow2', 'm.qcow2', 'r.raw'] },
  { chain: 'raw', args: ['commit', 't.qcow2', 'extra'], only: '7.2', exact: ['t.qcow2', 'm.qcow2', 'r.raw'] },
  { chain: 'raw', args: ['commit', 'missing.qcow2'], only: '7.2', exact: ['t.qcow2', 'm.qcow2', 'r.raw'] },
  // Failures after qemu's writable open: the tops' bitmaps stored anew.
  { chain: 'bitmaps', args: ['commit', '-b', 't.qcow2', 't.qcow2'], exact: ['t.qcow2', 'b.qcow2', 'lone.qcow2'], sandboxed: true },
  { chain: 'bitmaps', args: ['commit', '-p', 'lone.qcow2'], exact: ['t.qcow2', 'b.qcow2', 'lone.qcow2'] },
];

for (const version of VERSIONS) {
  test(`commit matches qemu-img ${version}`, () => {
    let guests = 0;
    for (const c of CASES) {
      if (c.only !== undefined && c.only !== version) continue;
      const label = `${version} ${c.chain}: ${c.args.join(' ')}`;
      // Only a few cases through the real sandbox (each launch costs); the rest in-process. The
      // guest only carries the result across: the short tier sends every other one of those
      // through it (the others in-process), the long tier all.
      const guest = c.sandboxed === true && version === '10.0' && (LONG || guests++ % 2 === 0);
      const r = twins.run(version, chains[c.chain], c.args, { sandboxed: guest });
      assertSameRun(r, label);
      for (const name of Object.keys(chains[c.chain])) {
        const mine = readFileSync(join(r.instarDir, name));
        const theirs = readFileSync(join(r.qemuDir, name));
        if (c.exact.includes(name)) {
          assert.ok(mine.equals(theirs), `${label}: ${name} differs from qemu-img's`);
          continue;
        }
        if (mine.equals(theirs)) continue;
        const format = name.endsWith('.vmdk') ? 'vmdk' : 'qcow2';
        assert.ok(sameDisk(version, join(r.instarDir, name), join(r.qemuDir, name), format), `${label}: ${name} reads differently from qemu-img's`);
        assertCheckClean(version, join(r.instarDir, name), format);
      }
    }
  });
}
