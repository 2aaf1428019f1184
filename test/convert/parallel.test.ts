// convert of disks big enough for one guest per core (ops/convert/split.ts): the parts are cut by
// work, not by offset, and each guest copies its part from the runs the weighing walk found; or,
// with INSTAR_COPY_SHARE=striped, each copies interleaved stripes. The output must equal both
// oracles' whatever the layout: data at the front only, several sources whose boundaries fall
// inside a part or a stripe, compressed and plain clusters mixed.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BLOCK_SLACK, convertBoth, convertInstar, qemu, qemuIo, tempDir, writePattern } from './helpers.ts';
import { PARALLEL_MIN_BYTES } from '../../src/ops/convert/split.ts';

const MiB = 1024 * 1024;
let dir: string;
let cleanup: () => void;
before(() => ({ dir, cleanup } = tempDir()));
after(() => cleanup());

/** A sparse raw file of `size` with qemu-io writes (pattern, offset, length in bytes). */
function raw(name: string, size: number, writes: [number, number, number][]): string {
  const path = join(dir, name);
  writeFileSync(path, '');
  truncateSync(path, size);
  if (writes.length > 0) qemuIo(path, writes.map(([p, at, n]) => `write -P ${p} ${at} ${n}`), 'raw');
  return name;
}

/**
 * Both shares (split.ts): the weighed parts, and with INSTAR_COPY_SHARE=striped the stripes. The
 * oracles' outputs do not depend on instar's share: they are made once and compared with both.
 */
function assertSameAsOracles(args: string[]): void {
  const { instar: weighed, oracles } = convertBoth(dir, args);
  const striped = convertInstar(dir, args, { INSTAR_COPY_SHARE: 'striped' });
  for (const [share, instar] of [['weighed', weighed], ['striped', striped]] as const) {
    assert.equal(instar.result.status, 0, `${share}: ${instar.result.stderr}`);
    for (const [v, o] of Object.entries(oracles)) {
      assert.equal(o.result.status, 0, `${v}: ${o.result.stderr}`);
      assert.equal(instar.hash, o.hash, `${share}: output equals qemu-img ${v}'s`);
      assert.equal(instar.size, o.size);
      assert.ok(instar.blocks! <= o.blocks! + BLOCK_SLACK, `${share}: as sparse as qemu-img ${v}'s (${instar.blocks} vs ${o.blocks} blocks)`);
    }
  }
}

const SIZE = PARALLEL_MIN_BYTES + 64 * MiB;

test('data only in the first tenth of a disk big enough for two guests', () => {
  const writes: [number, number, number][] = [];
  for (let i = 0; i < 16; i++) writes.push([i + 1, i * 2 * MiB + 4096 * i, MiB + 512 * i]);
  assertSameAsOracles(['-f', 'raw', raw('front.raw', SIZE, writes)]);
});

test('two sources: the weighed boundary falls inside the second one', () => {
  const a = raw('a.raw', 200 * MiB, [[1, 0, 64 * 1024]]);
  const b = raw('b.raw', 120 * MiB, [[2, 0, 40 * MiB], [3, 100 * MiB + 12345, 70000], [4, 120 * MiB - 4096, 4096]]);
  assertSameAsOracles(['-f', 'raw', a, b]);
});

test('qcow2 with compressed and plain clusters, the compressed ones in the first half', () => {
  const content = join(dir, 'content.raw');
  writePattern(content, 24 * MiB, 11);
  qemu(['convert', '-f', 'raw', '-O', 'qcow2', '-c', content, join(dir, 'mixed.qcow2')]);
  qemu(['resize', '-q', join(dir, 'mixed.qcow2'), String(SIZE)]);
  qemuIo(join(dir, 'mixed.qcow2'), ['write -P 7 200M 8M', `write -P 8 ${SIZE - 3 * MiB} 3M`]);
  assertSameAsOracles(['mixed.qcow2']);
});
