// snapshot -a of a snapshot whose disk size differs from the image's (qemu truncates to the
// snapshot's size, then applies it): snapshots taken before a grow (the image shrinks back, L2
// tables shared with the snapshot copied first) and before a shrink (the image grows back), with
// 64 KiB and 512-byte clusters; files byte-identical to qemu-img 7.2's and 10.0's. Also
// `resize --shrink` of an image with snapshots, and every prefix of a shrinking apply's writes
// leaves an image qemu-img checks with leaks at most (sampled; all in the long tier).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { VERSIONS, runQemu } from '../helpers/oracles.ts';
import { PairRunner, onCopy } from './pair.ts';
import { LONG } from '../helpers/long.ts';
import { assertSameRun } from '../check/repair-harness.ts';
import { planApply } from '../../src/formats/qcow2/snapshot-plan.ts';
import { applyRepair, writeCount } from '../../src/formats/repair.ts';

const dirs = new PairRunner();
const images: Record<string, Uint8Array> = {};

/** A step on the image at `path`: qemu-img arguments, or qemu-io commands after 'io'. */
type Step = (path: string) => string[];
const io = (...commands: string[]): Step => (p) => ['io', ...commands, p];
const img = (...args: string[]): Step => (p) => [...args.slice(0, -1), p, ...args.slice(-1)];

/** An image made by the 7.2 oracle: `create -f qcow2 <options> path size`, then `steps`. */
function made(name: string, options: string, size: string, steps: Step[]): Uint8Array {
  const path = join(dirs.root, name);
  assert.equal(runQemu('7.2', ['create', '-q', '-f', 'qcow2', '-o', options, path, size]).status, 0);
  for (const step of steps) {
    const args = step(path);
    const r = args[0] === 'io'
      ? runQemu('7.2', ['-f', 'qcow2', ...args.slice(1, -1).flatMap((c) => ['-c', c]), path], {}, 'qemu-io')
      : runQemu('7.2', args);
    assert.equal(r.status, 0, `${name} ${args.join(' ')}: ${r.stderr}`);
  }
  return new Uint8Array(readFileSync(path));
}

before(() => {
  const snapshot: Step = (p) => ['snapshot', '-c', 's1', p];
  images.grown = made('grown.qcow2', 'cluster_size=65536', '1M', [io('write -P 1 0 512k'), snapshot, img('resize', '-q', '2M'), io('write -P 2 1536k 64k', 'write -P 3 0 64k')]);
  images.grown512 = made('grown512.qcow2', 'cluster_size=512', '1M', [io('write -P 1 0 100k'), snapshot, img('resize', '-q', '3M'), io('write -P 2 2M 64k', 'write -P 3 0 4k')]);
  images.shrunk = made('shrunk.qcow2', 'cluster_size=65536', '2M', [io('write -P 1 0 2M'), snapshot, img('resize', '-q', '--shrink', '1M')]);
  images.shrunk512 = made('shrunk512.qcow2', 'cluster_size=512', '3M', [io('write -P 1 0 3M'), snapshot, img('resize', '-q', '--shrink', '1M'), io('write -P 5 0 8k')]);
  // Snapshots, then more data: a shrink copies the L2 tables it shares with them.
  images.shared = made('shared.qcow2', 'cluster_size=512', '2M', [io('write -P 1 0 1536k'), snapshot, io('write -P 2 1M 64k')]);
});
after(() => dirs.remove());

for (const version of VERSIONS) {
  test(`${version}: snapshot -a of another disk size, and resize --shrink with snapshots, as qemu-img`, async () => {
    const cases: [string, string[]][] = [
      ['grown', ['snapshot', '-a', 's1', 'img.qcow2']], ['grown512', ['snapshot', '-a', 's1', 'img.qcow2']],
      ['shrunk', ['snapshot', '-a', 's1', 'img.qcow2']], ['shrunk512', ['snapshot', '-a', 's1', 'img.qcow2']],
      ['shared', ['resize', '--shrink', 'img.qcow2', '512k']],
    ];
    for (const [image, args] of cases) {
      const r = await dirs.run(version, { 'img.qcow2': images[image] }, args);
      const what = `${version} ${image} ${args.join(' ')}`;
      assertSameRun(r, what);
      assert.equal(r.qemu.status, 0, `${what}: ${r.qemu.stderr}`);
      assert.ok(r.instarFiles['img.qcow2'].equals(r.qemuFiles['img.qcow2']), `${what}: instar's file is qemu-img's`);
      assert.ok(!r.instarFiles['img.qcow2'].equals(Buffer.from(images[image])), `${what}: the image changed`);
    }
  });
}

test('10.0 through the sandbox: snapshot -a of a smaller snapshot', async () => {
  const r = await dirs.run('10.0', { 'img.qcow2': images.grown512 }, ['snapshot', '-a', 's1', 'img.qcow2'], { sandboxed: true });
  assertSameRun(r, 'sandboxed');
  assert.ok(r.instarFiles['img.qcow2'].equals(r.qemuFiles['img.qcow2']), 'sandboxed: instar\'s file is qemu-img\'s');
});

test('crash safety: every (sampled) prefix of a shrinking apply leaves an image qemu-img checks with leaks at most', () => {
  const path = join(dirs.root, 'cut.qcow2');

  const steps = onCopy(images.grown512, path, (dev) => planApply(dev, 's1').steps);
  const total = writeCount(steps);
  assert.ok(total >= 5, `${total} writes`);
  // Every prefix in the long tier; every 8th and the last ones in the short tier.
  for (let k = 0; k <= total; k++) {
    if (!LONG && k % 8 !== 0 && k < total - 3) continue;
    onCopy(images.grown512, path, (dev) => applyRepair(dev, steps, { stopAfterWrites: k }));
    const r = runQemu('10.0', ['check', path], { timeoutMs: 20_000 });
    // Leaks, and COPIED flags cleared on clusters used once (harmless), at most.
    const lines = (r.stdout + r.stderr).split('\n').filter((l) => /^(ERROR|Leaked|Warning|qemu-img:)/.test(l));
    for (const l of lines) assert.match(l, /^Leaked cluster \d+ |^ERROR OFLAG_COPIED (data|L2) cluster: .* refcount=1$/, `after ${k} of ${total} writes: ${l}`);
    assert.ok([0, 2, 3].includes(r.status ?? -1), `after ${k} of ${total} writes: check exits ${r.status}`);
  }
});
