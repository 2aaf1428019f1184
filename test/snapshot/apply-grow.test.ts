// snapshot -a where qemu's qcow2_snapshot_goto does more than switch L1 tables: a snapshot whose
// L1 table has more entries than the active one (qemu grows the active table first: new clusters,
// header, the old table freed; after a truncate too), and a disk-size change under a backing file (the truncate zeroes
// the grown area when the backing file is longer than the old size; a shrink or a shorter backing
// file changes nothing more). Files byte-identical to qemu-img 7.2's and 10.0's, messages too; a
// v2 image's truncate fails as qemu's does, nothing written; every prefix of the writes leaves an
// image qemu-img checks with leaks at most, reading as before or as after.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { VERSIONS, runQemu } from '../helpers/oracles.ts';
import { PairRunner, onCopy } from '../qcow2-growth/pair.ts';
import { assertSameRun } from '../check/repair-harness.ts';
import { LONG } from '../helpers/long.ts';
import { planApply } from '../../src/formats/qcow2/snapshot-plan.ts';
import { applyRepair, writeCount } from '../../src/formats/repair.ts';

const dirs = new PairRunner();
const images: Record<string, Uint8Array> = {};
const MiB = 1024 * 1024;

function ok(args: string[], tool: 'qemu-img' | 'qemu-io' = 'qemu-img'): void {
  const r = runQemu('7.2', args, { cwd: dirs.root }, tool);
  assert.equal(r.status, 0, `${args.join(' ')}: ${r.stderr}`);
}
const io = (file: string, ...commands: string[]) => ok(['-f', 'qcow2', ...commands.flatMap((c) => ['-c', c]), file], 'qemu-io');

/** The file's bytes with the header's l1_size set to `entries` (and its disk size to `size`). */
function withL1Size(file: string, entries: number, size?: number): Uint8Array {
  const b = readFileSync(join(dirs.root, file));
  b.writeUInt32BE(entries, 36);
  if (size !== undefined) b.writeBigUInt64BE(BigInt(size), 24);
  return new Uint8Array(b);
}

/** A qcow2 over `base` of `size`, snapshot 's' at that size, more data, then resized to `after`. */
function overBase(name: string, base: string, size: string, after: string): Uint8Array {
  ok(['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', name, size]);
  io(name, 'write -P 1 64k 64k', 'write -P 2 1536k 64k');
  ok(['snapshot', '-c', 's', name]);
  io(name, 'write -P 3 0 64k');
  ok(['resize', '-q', ...(parseInt(after) < parseInt(size) ? ['--shrink'] : []), name, after]);
  return new Uint8Array(readFileSync(join(dirs.root, name)));
}

before(() => {
  // A 1 GiB image shrunk to 100 MiB keeps its 2-entry L1 table: the snapshot's has 2 entries, and
  // the active one is cut to the 1 it needs.
  ok(['create', '-q', '-f', 'qcow2', 'wide.qcow2', '1G']);
  ok(['resize', '-q', '--shrink', 'wide.qcow2', '100M']);
  io('wide.qcow2', 'write -P 1 0 128k');
  ok(['snapshot', '-c', 's', 'wide.qcow2']);
  io('wide.qcow2', 'write -P 2 64k 128k');
  images.wide = withL1Size('wide.qcow2', 1);
  // Also another disk size: qemu truncates to the snapshot's size, then grows the L1 table.
  images.wideResized = withL1Size('wide.qcow2', 1, 50 * MiB);
  // 512-byte clusters: the new table (256 entries) takes 4 clusters; the active one is cut to 128.
  ok(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512', 'wide512.qcow2', '8M']);
  ok(['resize', '-q', '--shrink', 'wide512.qcow2', '4M']);
  io('wide512.qcow2', 'write -P 1 0 1M', 'write -P 3 2M 512k');
  ok(['snapshot', '-c', 's', 'wide512.qcow2']);
  io('wide512.qcow2', 'write -P 2 64k 1M');
  images.wide512 = withL1Size('wide512.qcow2', 128);
  // The truncate (2 -> 4 MiB) grows the table to 128 entries, the apply then to 256.
  images.wide512Resized = withL1Size('wide512.qcow2', 64, 2 * MiB);

  ok(['create', '-q', '-f', 'qcow2', 'base.qcow2', '8M']);
  io('base.qcow2', 'write -P 7 0 8M');
  images.base = new Uint8Array(readFileSync(join(dirs.root, 'base.qcow2')));
  ok(['create', '-q', '-f', 'qcow2', 'short.qcow2', '1M']);
  io('short.qcow2', 'write -P 8 0 1M');
  images.short = new Uint8Array(readFileSync(join(dirs.root, 'short.qcow2')));
  images.grows = overBase('grows.qcow2', 'base.qcow2', '4M', '2M');
  images.shrinks = overBase('shrinks.qcow2', 'base.qcow2', '2M', '4M');
  images.growsShort = overBase('grows-short.qcow2', 'short.qcow2', '4M', '2M');

  // A v2 image whose snapshot has another disk size (the header's size patched): qemu cannot resize it.
  ok(['create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', 'v2.qcow2', '2M']);
  io('v2.qcow2', 'write -P 1 0 64k');
  ok(['snapshot', '-c', 's', 'v2.qcow2']);
  const v2 = readFileSync(join(dirs.root, 'v2.qcow2'));
  v2.writeBigUInt64BE(BigInt(4 * MiB), 24);
  images.v2 = new Uint8Array(v2);
});
after(() => dirs.remove());

const cases: [string, Record<string, string>][] = [
  ['wide', { 'img.qcow2': 'wide' }],
  ['wide512', { 'img.qcow2': 'wide512' }],
  ['wide, another disk size', { 'img.qcow2': 'wideResized' }],
  ['wide512, another disk size', { 'img.qcow2': 'wide512Resized' }],
  ['grows under a longer backing file', { 'img.qcow2': 'grows', 'base.qcow2': 'base' }],
  ['shrinks under a backing file', { 'img.qcow2': 'shrinks', 'base.qcow2': 'base' }],
  ['grows under a shorter backing file', { 'img.qcow2': 'growsShort', 'short.qcow2': 'short' }],
];

for (const [i, version] of VERSIONS.entries()) {
  test(`${version}: snapshot -a growing the L1 table or changing the size under a backing file, as qemu-img`, async () => {
    for (const [j, [label, files]] of cases.entries()) {
      const bytes = Object.fromEntries(Object.entries(files).map(([name, key]) => [name, images[key]]));
      // One case per version through the sandbox (the backing file's size crosses to the guest).
      const r = await dirs.run(version, bytes, ['snapshot', '-a', 's', 'img.qcow2'], { sandboxed: j === 4 + i });
      const what = `${version} ${label}`;
      assertSameRun(r, what);
      assert.equal(r.qemu.status, 0, `${what}: ${r.qemu.stderr}`);
      assert.ok(r.instarFiles['img.qcow2'].equals(r.qemuFiles['img.qcow2']), `${what}: instar's file is qemu-img's`);
      assert.ok(!r.instarFiles['img.qcow2'].equals(Buffer.from(bytes['img.qcow2'])), `${what}: the image changed`);
    }
  });
}

test('a v2 image whose snapshot has another size: qemu\'s two lines, nothing written', async () => {
  for (const version of VERSIONS) {
    const r = await dirs.run(version, { 'img.qcow2': images.v2 }, ['snapshot', '-a', 's', 'img.qcow2']);
    assertSameRun(r, version);
    assert.equal(r.instar.stderr, "qemu-img: Can't resize a v2 image which has snapshots\nqemu-img: Could not apply snapshot 's': Failed to load snapshot: Operation not supported\n");
    assert.ok(r.instarFiles['img.qcow2'].equals(Buffer.from(images.v2)), `${version}: unchanged`);
  }
});

test('crash safety: every prefix of the writes leaves a checkable image that reads as before or after', () => {
  const crashed = join(dirs.root, 'cut.qcow2');
  const before = join(dirs.root, 'before.qcow2');
  const done = join(dirs.root, 'done.qcow2');
  for (const [key, backingSize] of [['wide', undefined], ['wide512', undefined], ['grows', 8 * MiB]] as const) {
    writeFileSync(before, images[key]);
    const steps = onCopy(images[key], done, (dev) => planApply(dev, 's', backingSize).steps);
    onCopy(images[key], done, (dev) => applyRepair(dev, steps));
    const total = writeCount(steps);
    assert.ok(total >= 4, `${key}: ${total} writes`);
    // Every prefix in the long tier; in the short tier the first ones (the L1 table's growth), every
    // 128th (the apply's L2 and refcount writes) and the last ones.
    for (let k = 0; k <= total; k++) {
      if (!LONG && k % 128 !== 0 && k > 12 && k < total - 3) continue;
      onCopy(images[key], crashed, (dev) => applyRepair(dev, steps, { stopAfterWrites: k }));
      const r = runQemu('10.0', ['check', crashed], { timeoutMs: 20_000 });
      const lines = (r.stdout + r.stderr).split('\n').filter((l) => /^(ERROR|Leaked|Warning|qemu-img:)/.test(l));
      for (const l of lines) assert.match(l, /^Leaked cluster \d+ |^ERROR OFLAG_COPIED (data|L2) cluster: .* refcount=1$/, `${key} after ${k} of ${total} writes: ${l}`);
      assert.ok([0, 2, 3].includes(r.status ?? -1), `${key} after ${k} of ${total}: check exits ${r.status}`);
      const same = (other: string) => runQemu('10.0', ['compare', '-q', other, crashed], { cwd: dirs.root }).status === 0;
      assert.ok(same(before) || same(done), `${key} after ${k} of ${total} writes: the disk reads as before or as after`);
    }
  }
});
