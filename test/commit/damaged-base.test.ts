// commit into a qcow2 base whose refcounts are wrong (what a snapshot -c that failed half-way leaves:
// an L2 table and a data cluster with refcount 2 under COPIED entries, and leaked clusters). qemu
// opens such a base read-only first, then for writing, and writes through the COPIED flags in
// place, as instar does. 64 KiB clusters, one cluster newly allocated: qemu's layout is
// deterministic, the files byte-identical to qemu-img 7.2's and 10.0's (with two, its mirror's
// parallel writes allocated them in either order on a loaded CI machine); 1 KiB clusters (the generative hunt's case 8700000/19): its mirror
// allocates four clusters per 4 KiB chunk in an order its timing decides, so the base must read
// the same and check as qemu's does (the same leaks and corruptions, fragmentation aside).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { VERSIONS, runQemu } from '../helpers/oracles.ts';
import { TwinDirs, assertSameOutcome } from '../rebase/harness.ts';
import { ImageBuilder, checkVerdict, sameDisk } from './harness.ts';
import { layout, l2Entry, setRefcount16 } from '../check/qcow2-edit.ts';

const builder = new ImageBuilder();
const twins = new TwinDirs();
const chains: Record<'big' | 'small', Record<string, Uint8Array>> = { big: {}, small: {} };

/** The base's L2 table and first data cluster counted twice, and one cluster leaked. */
function damage(dir: string, bytes: Uint8Array): Uint8Array {
  const path = join(dir, 'damaged.qcow2');
  writeFileSync(path, bytes);
  const { clusterSize } = layout(path);
  const l2 = l2Entry(path, 0, 0);
  const l1Entry = readFileSync(path).readBigUInt64BE(layout(path).l1Offset);
  const l2Table = Number(l1Entry & 0x00fffffffffffe00n);
  setRefcount16(path, l2Table / clusterSize, 2);
  setRefcount16(path, (l2 & 0x00fffffffffffe00) / clusterSize, 2);
  const end = readFileSync(path).length / clusterSize;
  setRefcount16(path, end - 1, 2);
  return readFileSync(path);
}

before(() => {
  chains.big = builder.chain([
    { name: 'b.qcow2', create: ['-f', 'qcow2'], writes: ['write -P 1 0 128k', 'write -P 2 1M 64k'] },
    { name: 't.qcow2', create: ['-f', 'qcow2', '-b', 'b.qcow2', '-F', 'qcow2'], writes: ['write -P 3 4k 8k', 'write -P 4 256k 64k'] },
  ]);
  chains.small = builder.chain([
    { name: 'b.qcow2', create: ['-f', 'qcow2', '-o', 'cluster_size=1024'], writes: ['write -P 1 0 16k', 'write -P 2 1M 4k'] },
    { name: 't.qcow2', create: ['-f', 'qcow2', '-o', 'extended_l2=on', '-b', 'b.qcow2', '-F', 'qcow2'], writes: ['write -P 3 2k 10k', 'write -P 4 256k 12k'] },
  ]);
  for (const chain of Object.values(chains)) chain['b.qcow2'] = damage(builder.root, chain['b.qcow2']);
  for (const chain of Object.values(chains)) {
    const path = join(builder.root, 'damaged.qcow2');
    writeFileSync(path, chain['b.qcow2']);
    const r = JSON.parse(runQemu('7.2', ['check', '--output=json', path]).stdout) as { corruptions?: number; leaks?: number };
    assert.ok((r.corruptions ?? 0) > 0 && (r.leaks ?? 0) > 0, `the base is damaged: ${JSON.stringify(r)}`);
  }
});
after(() => {
  builder.remove();
  twins.remove();
});

test('commit into a base with refcount errors: byte-identical to qemu-img where its layout is deterministic', () => {
  for (const v of VERSIONS) {
    const r = twins.run(v, chains.big, ['commit', 't.qcow2']);
    assertSameOutcome(r, ['b.qcow2', 't.qcow2'], `qemu-img ${v} commit`);
    const check = runQemu(v, ['check', join(r.qemuDir, 'b.qcow2')]);
    assert.equal(check.status, 2, `${v}: the base keeps its COPIED errors: ${check.stdout}`);
    assert.match(check.stderr, /ERROR OFLAG_COPIED/);
  }
});

test('commit into a 1 KiB-cluster base with refcount errors: the same content and check verdict as qemu-img', () => {
  for (const v of VERSIONS) {
    const r = twins.run(v, chains.small, ['commit', '-d', 't.qcow2']);
    assertSameOutcome(r, ['t.qcow2'], `qemu-img ${v} commit -d`);
    const [q, i] = [join(r.qemuDir, 'b.qcow2'), join(r.instarDir, 'b.qcow2')];
    assert.ok(sameDisk(v, q, i), `${v}: the bases read differently`);
    assert.equal(checkVerdict(v, i), checkVerdict(v, q), `${v}: check`);
    assert.ok(JSON.parse(runQemu(v, ['check', '--output=json', q]).stdout).leaks > 0, 'the leak stays');
  }
});
