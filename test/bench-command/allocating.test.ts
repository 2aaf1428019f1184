// qemu-img bench -w on qcow2 images whose requests reach unallocated clusters (the plain
// `qemu-img bench -w new.qcow2`): the file written byte for byte as qemu-img 7.2 and 10.0 write
// it, stdout (timing masked), stderr and status alike; every prefix of instar's writes leaves an
// image qemu-img check accepts; and what stays refused, with nothing written.
//
// qemu keeps -d requests in flight (64 by default); its allocation order is the requests' own
// unless a request's clusters are allocated in two rounds of its driver's lock (a cluster shared
// with a request still in flight, an L2 table boundary inside the request), when others take
// their turn in between (measured: 512-byte to 4 KiB clusters, requests of several clusters).
// instar runs the requests one at a time: with -d 1 its file is qemu's in those shapes too.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, copyFileSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { VERSIONS, runQemu, type OracleVersion } from '../helpers/oracles.ts';
import { instarRun, qemuRun, tempDir } from '../dd/helpers.ts';
import { FdDevice } from '../../src/io/fd-device.ts';
import { qcow2Driver } from '../../src/formats/qcow2/driver.ts';
import { writeAllocating } from '../../src/ops/bench-allocate.ts';
import { LONG, tiered } from '../helpers/long.ts';

let dir: string;
let cleanup: () => void;
const p = (name: string) => join(dir, name);

/** name → qemu-img create arguments (size last) and qemu-io commands run on it after. */
const IMAGES: Record<string, { create: string[]; io?: string[] }> = {
  fresh: { create: ['64M'] },
  small: { create: ['8M'] },
  odd: { create: ['1000000'] },
  v2: { create: ['-o', 'compat=0.10', '16M'] },
  refbits1: { create: ['-o', 'refcount_bits=1', '16M'] },
  big: { create: ['-o', 'cluster_size=2M', '16M'] },
  tiny: { create: ['-o', 'cluster_size=512', '4M'] },
  partial: { create: ['8M'], io: ['write -P 5 1M 1M', 'write -z 3M 64k', 'write -P 6 5M 4k'] },
  backed: { create: ['-b', 'base.qcow2', '-F', 'qcow2', '8M'] },
};

before(() => {
  ({ dir, cleanup } = tempDir('instar-bench-alloc-'));
  const ok = (r: { status: number | null; stderr: string }) => assert.equal(r.status, 0, r.stderr);
  ok(qemuRun('10.0', ['create', '-q', '-f', 'qcow2', p('base.qcow2'), '8M']));
  ok(qemuRun('10.0', ['-f', 'qcow2', '-c', 'write -P 3 0 8M', p('base.qcow2')], undefined, 'qemu-io'));
  for (const [name, { create, io }] of Object.entries(IMAGES)) {
    ok(qemuRun('10.0', ['create', '-q', '-f', 'qcow2', ...create.slice(0, -1), p(`${name}.qcow2`), create.at(-1)!], dir));
    for (const cmd of io ?? []) ok(qemuRun('10.0', ['-f', 'qcow2', '-c', cmd, p(`${name}.qcow2`)], undefined, 'qemu-io'));
  }
});
after(() => cleanup());

const TIMING = /^Run completed in \d+\.\d{3} seconds\.$/m;
const masked = (text: string) => text.replace(TIMING, 'Run completed in X seconds.');

/** bench args on a copy of `image` each: output, status and the written file alike. */
async function sameWrite(version: OracleVersion, image: string, args: string[], sandboxed = false): Promise<void> {
  const label = `${version} ${image} bench ${args.join(' ')}`;
  const q = p(`q-${image}.qcow2`);
  const i = p(`i-${image}.qcow2`);
  copyFileSync(p(`${image}.qcow2`), q);
  copyFileSync(p(`${image}.qcow2`), i);
  const qr = qemuRun(version, ['bench', ...args, q], dir);
  const ir = await instarRun(version, ['bench', ...args, i], { sandboxed, cwd: dir });
  assert.equal(ir.stderr.split(i).join(q), qr.stderr, `${label}: stderr`);
  assert.equal(masked(ir.stdout), masked(qr.stdout), `${label}: stdout`);
  assert.equal(ir.status, qr.status, `${label}: exit status`);
  assert.ok(readFileSync(i).equals(readFileSync(q)), `${label}: the written file`);
}

const RUNS: [string, string[]][] = [
  // qemu-img's defaults: 75000 requests of 4 KiB, 64 in flight, wrapping over the whole disk.
  ['fresh', ['-w']],
  ['fresh', ['-w', '-c', '100', '--pattern', '0x41']],
  ['fresh', ['-w', '-c', '50', '-S', '1M']],
  // Wrapping past the end from an offset: the clusters below it are allocated last.
  ['small', ['-w', '-c', '3000', '-o', '5M', '--pattern', '7']],
  // Requests of several clusters, and unaligned ones that leave parts of their clusters.
  ['small', ['-w', '-c', '5', '-s', '3M', '-S', '1M', '--pattern', '9']],
  ['small', ['-w', '-c', '40', '-s', '1000', '-S', '77777', '-o', '123', '--pattern', '1']],
  ['odd', ['-w', '-c', '300', '-s', '512', '-S', '3333', '--pattern', '2']],
  ['v2', ['-w', '-c', '500', '-S', '33k', '--pattern', '3']],
  ['refbits1', ['-w', '-c', '300', '-S', '40k', '--pattern', '4']],
  ['big', ['-w', '-c', '20', '-S', '1M', '--pattern', '5']],
  // Over data, zero clusters and a backing file: the rest of each new cluster copied from below.
  ['partial', ['-w', '-c', '100', '-S', '100k', '--pattern', '6']],
  ['backed', ['-w', '-c', '100', '-S', '70k', '-s', '2k', '--pattern', '8']],
  // Requests sharing clusters, one at a time: qemu's own order then.
  ['tiny', ['-w', '-c', '2000', '-S', '3k', '-s', '1k', '-d', '1', '--pattern', '10']],
  // A request past the disk's end among the first 64: qemu exits before writing anything.
  ['odd', ['-w', '-c', '40', '-s', '64k', '-S', '60k']],
];

// Short tier: every run but qemu-img's defaults (75000 requests wrapping over 64 MiB: the wrap and
// the default depth of 64 are the small runs' too, at 1/25 of the requests); long tier: all.
const TIER_RUNS = tiered(RUNS, ([, args]) => args.includes('-c'));

for (const version of VERSIONS) {
  test(`${version}: bench -w allocating qcow2 clusters writes qemu's file`, async () => {
    for (const [image, args] of TIER_RUNS) await sameWrite(version, image, args);
  });
}

test('through the sandbox: bench -w allocating in a qcow2 over its backing file', async () => {
  await sameWrite('10.0', 'backed', ['-w', '-c', '64', '-S', '100k', '--pattern', '0x5a'], true);
});

/** qemu-img check on a crashed image: it opens, and reports leaked clusters at worst. */
function assertRecoverable(file: string, what: string): void {
  for (const version of VERSIONS) {
    const r = runQemu(version, ['check', file], { timeoutMs: 20_000 });
    const bad = (r.stdout + r.stderr).split('\n').filter((l) => /^(ERROR|qemu-img:)/.test(l));
    assert.deepEqual(bad, [], `${what} (${version})`);
    assert.ok(r.status === 0 || r.status === 3, `${what} (${version}): check exit ${r.status}: ${r.stderr}`);
  }
}

/** Runs instar's allocating writer on `file` in-process, stopping after `stop` writes. */
function cutWrite(file: string, offsets: number[], bufsize: number, stop: number): number {
  const fd = openSync(file, 'r+');
  try {
    const dev = new FdDevice(fd, true);
    const image = qcow2Driver.open(dev, { writable: true, readsData: true });
    return writeAllocating(image, dev, image.info()['cluster-size'] as number, offsets, bufsize, 0x33, stop);
  } finally {
    closeSync(fd);
  }
}

test('every prefix of its writes leaves an image qemu-img check accepts (two parts: requests wrapping)', () => {
  // 8 MiB: requests from 7 MiB on wrap to 0, so a second part allocates below the first.
  const offsets = Array.from({ length: 24 }, (_, k) => (7 * 1024 * 1024 + k * 100 * 1024) % (8 * 1024 * 1024));
  const whole = p('cut-whole.qcow2');
  copyFileSync(p('small.qcow2'), whole);
  const total = cutWrite(whole, offsets, 8192, Infinity);
  assert.ok(total >= 8, `${total} writes`);
  const cut = p('cut.qcow2');
  // Short tier: every third prefix and the last (cuts in both parts, before and after the wrap); long tier: every one.
  for (let k = 0; k < total; k++) {
    if (!LONG && k % 3 !== 0 && k !== total - 1) continue;
    copyFileSync(p('small.qcow2'), cut);
    assert.equal(cutWrite(cut, offsets, 8192, k), k);
    assertRecoverable(cut, `after ${k} of ${total} writes`);
  }
  assertRecoverable(whole, 'all writes');
});

test('refused with nothing written: other formats, qcow2 with persistent bitmaps', async () => {
  const ok = (r: { status: number | null; stderr: string }) => assert.equal(r.status, 0, r.stderr);
  ok(qemuRun('10.0', ['create', '-q', '-f', 'vdi', p('r.vdi'), '1M']));
  ok(qemuRun('10.0', ['create', '-q', '-f', 'qcow2', p('r.qcow2'), '1M']));
  ok(qemuRun('10.0', ['bitmap', '--add', p('r.qcow2'), 'b0']));
  for (const [file, message] of [
    ['r.vdi', "instar's bench -w writes to raw and qcow2 images only (this is vdi); nothing was written"],
    ['r.qcow2', "instar's bench -w does not allocate in a qcow2 image with persistent bitmaps or encryption; nothing was written"],
  ]) {
    const before = readFileSync(p(file));
    const r = await instarRun('10.0', ['bench', '-w', '-c', '1', p(file)]);
    assert.deepEqual([r.status, r.stdout, r.stderr], [1, '', `qemu-img: ${message}\n`], file);
    assert.ok(readFileSync(p(file)).equals(before), `${file}: untouched`);
  }
});
