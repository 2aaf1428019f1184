// resize on hostile images, in-process: qcow2 and qed images made by qemu-img with random bytes
// of their metadata changed. Whatever the bytes say, opening and planning either refuse with an
// ImageError or give a plan the executor applies within its bounds; nothing else escapes (no
// stack trace reaches a user), and a refused plan writes nothing. Also: a backing file outside
// the allowed paths is refused before anything is written; qed and raw resizes cut after any
// write leave images qemu-img checks clean.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { runQemu } from '../helpers/oracles.ts';
import { prng } from '../helpers/xorshift.ts';
import { ImageError, type BlockDevice, type Driver } from '../../src/formats/types.ts';
import { qcow2Driver } from '../../src/formats/qcow2/driver.ts';
import { qedDriver } from '../../src/formats/qed/driver.ts';
import { applyRepair, writeCount } from '../../src/formats/repair.ts';
import { FdDevice } from '../../src/io/fd-device.ts';
import { rawDriver } from '../../src/formats/raw/driver.ts';
import { rawResize } from '../../src/formats/raw/resize.ts';
import { ResizeDirs, assertSameFiles } from './harness.ts';

const dirs = new ResizeDirs();
const seeds: Record<string, Uint8Array> = {};

/** A writable file in memory that ftruncate can grow (bounded: a hostile plan must not eat RAM). */
class MemoryFile implements BlockDevice {
  constructor(public bytes: Uint8Array) {}
  get size(): number {
    return this.bytes.length;
  }
  read(buf: Uint8Array, pos: number): number {
    const part = this.bytes.subarray(Math.min(pos, this.bytes.length), Math.min(this.bytes.length, pos + buf.length));
    buf.set(part);
    return part.length;
  }
  write(buf: Uint8Array, pos: number): void {
    assert.ok(pos + buf.length <= this.bytes.length, 'the executor writes inside the file');
    this.bytes.set(buf, pos);
  }
  truncate(size: number): void {
    assert.ok(size <= 64 * 1024 * 1024, `a plan sized the file to ${size} bytes`);
    const next = new Uint8Array(size);
    next.set(this.bytes.subarray(0, Math.min(size, this.bytes.length)));
    this.bytes = next;
  }
}

before(() => {
  const q = dirs.path('q.qcow2');
  assert.equal(runQemu('10.0', ['create', '-q', '-f', 'qcow2', q, '1300M']).status, 0);
  assert.equal(runQemu('10.0', ['-c', 'write -P 5 0 300k', '-c', 'write -P 7 1200M 64k', '-c', 'discard 64k 64k', q], {}, 'qemu-io').status, 0);
  seeds.qcow2 = new Uint8Array(readFileSync(q));
  const e = dirs.path('e.qed');
  assert.equal(runQemu('10.0', ['create', '-q', '-f', 'qed', e, '10M']).status, 0);
  assert.equal(runQemu('10.0', ['-c', 'write -P 5 0 300k', e], {}, 'qemu-io').status, 0);
  seeds.qed = new Uint8Array(readFileSync(e));
});
after(() => dirs.remove());

function fuzz(driver: Driver, seed: Uint8Array, metadataBytes: number, rounds: number): { planned: number; refused: number } {
  const next = prng(0x5eed + seed.length);
  let planned = 0, refused = 0;
  for (let round = 0; round < rounds; round++) {
    const bytes = new Uint8Array(seed);
    for (let k = 1 + (next() % 6); k > 0; k--) bytes[next() % metadataBytes] = next() & 0xff;
    const file = new MemoryFile(bytes);
    const sizes = [512, 65536, 100 * 1024 * 1024, 4 * 2 ** 30, 2 ** 50, (next() % 2 ** 20) * 512];
    const newSize = sizes[next() % sizes.length];
    try {
      const image = driver.open(file, { writable: true, readsData: true });
      const plan = driver.resize!.plan(image, file, { newSize, preallocation: 'off' });
      if ('error' in plan) {
        assert.ok(file.bytes.every((b, i) => b === bytes[i]) && file.size === bytes.length, 'a refused plan wrote nothing');
        refused++;
        continue;
      }
      applyRepair(file, plan.steps);
      planned++;
    } catch (e) {
      if (!(e instanceof ImageError)) throw new Error(`round ${round} (size ${newSize}): ${(e as Error).stack}`);
      refused++;
    }
  }
  return { planned, refused };
}

test('qcow2 resize of damaged metadata: a plan or an ImageError, nothing else', () => {
  // Header, refcount table and block, L1 and L2 tables: the first five clusters.
  const { planned, refused } = fuzz(qcow2Driver, seeds.qcow2, 5 * 65536, 400);
  assert.ok(planned > 50 && refused > 20, `both outcomes happen (${planned} planned, ${refused} refused)`);
});

test('qed resize of a damaged header: a plan or an ImageError, nothing else', () => {
  const { planned, refused } = fuzz(qedDriver, seeds.qed, 64, 200);
  assert.ok(planned > 0 && refused > 10, `both outcomes happen (${planned} planned, ${refused} refused)`);
});

test('a backing file outside the allowed paths: refused before anything is written', () => {
  const files = { 'o.qcow2': new Uint8Array(0) };
  const o = dirs.path('o.qcow2');
  assert.equal(runQemu('10.0', ['create', '-q', '-f', 'qcow2', '-u', '-b', '/etc/passwd', '-F', 'raw', o, '4M']).status, 0);
  files['o.qcow2'] = new Uint8Array(readFileSync(o));
  for (const sandboxed of [false, true]) {
    const r = dirs.run('10.0', files, ['o.qcow2', '2G'], { sandboxed });
    assert.equal(r.instar.status, 1);
    assert.equal(r.instar.stderr, "qemu-img: Could not open 'o.qcow2': Could not open backing file: '/etc/passwd' is outside the allowed paths (instar's path policy; allow it with --allow-path)\n");
    assert.equal(r.qemu.status, 0, 'qemu resizes it');
    // Only qemu's copy changed.
    assert.throws(() => assertSameFiles(r, 'passwd backing'));
    assert.ok(readFileSync(`${r.idir}/o.qcow2`).equals(Buffer.from(files['o.qcow2'])), 'nothing written');
  }
});

test('qed and raw resizes: every prefix of their writes leaves an image qemu-img checks clean', () => {
  const path = dirs.path('cut.img');
  const plans: [Driver, Uint8Array, string, number][] = [[qedDriver, seeds.qed, 'qed', 2 ** 30]];
  for (const [driver, seed, format, newSize] of plans) {
    let total = Infinity;
    for (let n = 0; n <= total; n++) {
      writeFileSync(path, seed);
      const fd = openSync(path, 'r+');
      try {
        const dev = new FdDevice(fd, true);
        const plan = driver.resize!.plan(driver.open(dev, { writable: true, readsData: true }), dev, { newSize, preallocation: 'off' });
        assert.ok('steps' in plan);
        total = writeCount(plan.steps);
        applyRepair(dev, plan.steps, { stopAfterWrites: n });
      } finally {
        closeSync(fd);
      }
      const check = runQemu('10.0', ['check', '-f', format, path]);
      assert.equal(check.status, 0, `${format}, after ${n} of ${total} writes: ${check.stdout}${check.stderr}`);
    }
    assert.equal(total, 1, `${format}: one write`);
  }
  // raw: the length, then (full preallocation) the zeros; every prefix is a readable raw file of
  // the old or the new length with the old bytes first.
  writeFileSync(path, seeds.qed);
  const fd = openSync(path, 'r+');
  try {
    const dev = new FdDevice(fd, true);
    const plan = rawResize.plan(rawDriver.open(dev, { writable: true }), dev, { newSize: 4 * 2 ** 20, preallocation: 'full' });
    assert.ok('steps' in plan);
    assert.deepEqual(plan.steps.map((s) => s.kind), ['truncate', 'zero']);
    applyRepair(dev, plan.steps, { stopAfterWrites: 1 });
  } finally {
    closeSync(fd);
  }
  const after1 = readFileSync(path);
  assert.equal(after1.length, 4 * 2 ** 20);
  assert.ok(after1.subarray(0, seeds.qed.length).equals(Buffer.from(seeds.qed)));
});
