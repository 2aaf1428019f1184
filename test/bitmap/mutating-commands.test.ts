// resize, snapshot, check -r, convert -n and rebase -u on qcow2 images with persistent bitmaps (enabled,
// disabled, in use) or a stale bitmaps extension: qemu's writable open marks the bitmaps in use (or drops the
// stale extension), the command runs, and its close stores the bitmaps anew (truncated to a new
// size) — also when the command fails after the open. instar against 7.2 and 10.0 (each case on
// one of them in the short tier, on both in the long one): stdout, stderr, exit status and the
// file byte for byte (snapshot dates masked). Every prefix of the writes of a
// resize and a snapshot -c leaves an image qemu-img checks with leaks at most (and, for snapshot
// -c, COPIED flags cleared on clusters used once, which qemu copies before writing).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runQemu, type OracleVersion } from '../helpers/oracles.ts';
import { versionMatrix } from './harness.ts';
import { assertSameRun } from '../check/repair-harness.ts';
import { maskSnapshotDates } from '../snapshot/harness.ts';
import { build10, directoryOffset, withStaleExtension } from './fixtures.ts';
import { FdDevice } from '../../src/io/fd-device.ts';
import { qcow2Driver } from '../../src/formats/qcow2/driver.ts';
import { qcow2Resize } from '../../src/formats/qcow2/resize.ts';
import { qcow2Snapshots } from '../../src/formats/qcow2/snapshot-plan.ts';
import { applyRepair, writeCount, type RepairStep } from '../../src/formats/repair.ts';
import { RepairDirs } from '../check/fast-dirs.ts';
// In the long tier its unsandboxed instar runs launch the built CLI as before (check/instar-sync.ts).
import '../helpers/long.ts';

const dirs = new RepairDirs();
const images: Record<string, Buffer> = {};

const sh = build10;
const staled = withStaleExtension;

before(() => {
  const p = (name: string) => join(dirs.root, name);
  // b0 enabled (it records the write at 1M), b1 disabled with 128 KiB granules; holes left by
  // the bitmaps' earlier stores, so the close's allocations reuse them.
  sh(['create', '-q', '-f', 'qcow2', p('two.qcow2'), '4M']);
  sh(['-c', 'write -P 1 0 64k', p('two.qcow2')], 'qemu-io');
  sh(['bitmap', '--add', p('two.qcow2'), 'b0']);
  sh(['bitmap', '--add', '-g', '128k', p('two.qcow2'), 'b1']);
  sh(['bitmap', '--disable', p('two.qcow2'), 'b1']);
  sh(['-c', 'write -P 2 1M 64k', p('two.qcow2')], 'qemu-io');
  images.two = readFileSync(p('two.qcow2'));
  images.stale = staled(images.two);
  // b0 in use (a crash left it so): inconsistent.
  images.inuse = Buffer.from(images.two);
  images.inuse[directoryOffset(images.inuse) + 15] |= 1;
  // A snapshot, then a write after it that the enabled bitmap records.
  sh(['snapshot', '-c', 's1', p('two.qcow2')]);
  sh(['-c', 'write -P 7 0 64k', p('two.qcow2')], 'qemu-io');
  images.snap = readFileSync(p('two.qcow2'));
  images.stalesnap = staled(images.snap);
  // 512-byte clusters: the bitmap tables span several clusters and a resize grows the L1 table
  // over several clusters (first-fit runs skip the holes).
  sh(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512', p('small.qcow2'), '1M']);
  sh(['bitmap', '--add', '-g', '512', p('small.qcow2'), 'fine']);
  sh(['bitmap', '--add', p('small.qcow2'), 'coarse']);
  sh(['-c', 'write -P 3 0 16k', '-c', 'write -P 4 700k 4k', p('small.qcow2')], 'qemu-io');
  images.small = readFileSync(p('small.qcow2'));
  // An external (raw) data file: the bitmaps are still the image file's, stored anew at close
  // when resize fails after the open (found by the generative hunt: instar wrote nothing).
  const inRoot = (args: string[], tool: 'qemu-img' | 'qemu-io' = 'qemu-img') => assert.equal(runQemu('10.0', args, { cwd: dirs.root }, tool).status, 0, args.join(' '));
  inRoot(['create', '-q', '-f', 'qcow2', '-o', 'data_file=dd.data,data_file_raw=on', 'df.qcow2', '4M']);
  inRoot(['-c', 'write -P 1 0 64k', 'df.qcow2'], 'qemu-io');
  inRoot(['bitmap', '--add', 'df.qcow2', 'b0']);
  inRoot(['bitmap', '--add', '--disable', 'df.qcow2', 'b1']);
  inRoot(['-c', 'write -P 2 1M 64k', 'df.qcow2'], 'qemu-io');
  images.datafile = readFileSync(p('df.qcow2'));
  images['dd.data'] = readFileSync(p('dd.data'));
  // The same with b0 in use: qemu's bitmap check fails the resize before instar's data-file refusal.
  images.dfinuse = Buffer.from(images.datafile);
  images.dfinuse[directoryOffset(images.dfinuse) + 15] |= 1;
  // convert -n sources: 4 MiB and 1 MiB with data in a few places.
  for (const [name, size, writes] of [['src4.qcow2', '4M', ['write -P 9 64k 64k', 'write -P 8 3M 4k']], ['src1.qcow2', '1M', ['write -P 9 8k 4k', 'write -P 8 900k 100k']]] as const) {
    sh(['create', '-q', '-f', 'qcow2', p(name), size]);
    sh([...writes.flatMap((w) => ['-c', w]), p(name)], 'qemu-io');
    images[name] = readFileSync(p(name));
  }
});
after(() => dirs.remove());

/** Runs `args` (IMG standing for the image) on both sides; returns whether qemu succeeded. */
function same(version: OracleVersion, image: string, args: string[], opts: { sandboxed?: boolean; files?: string[] } = {}): void {
  const name = 'x.qcow2';
  const files = Object.fromEntries((opts.files ?? []).map((f) => [f, images[f]]));
  const r = dirs.run(version, name, images[image], args.map((a) => (a === 'IMG' ? name : a)), { viaEnv: true, sandboxed: opts.sandboxed, files });
  const label = `qemu-img ${version} ${args.join(' ')} on ${image}`;
  assertSameRun(r, label);
  assert.ok(maskSnapshotDates(r.instarFile).equals(maskSnapshotDates(r.qemuFile)), `${label}: the files differ`);
}

test('resize with bitmaps: grown, shrunk, L1 growth, and qemu-img failures after the open, as qemu writes them', () => {
  const cases: [string, string[]][] = [
    ['two', ['resize', 'IMG', '8M']],
    ['two', ['resize', '--shrink', 'IMG', '1M']],
    ['two', ['resize', 'IMG', '1T']],
    ['two', ['resize', 'IMG', '+64k']],
    ['two', ['resize', '--preallocation=metadata', 'IMG', '9M']],
    ['two', ['resize', '--preallocation=full', 'IMG', '9M']],
    // qemu-img's own refusals and the driver's: the open and the close still write.
    ['two', ['resize', 'IMG', '1M']],
    ['two', ['resize', 'IMG', '4194305']],
    ['inuse', ['resize', 'IMG', '8M']],
    ['inuse', ['resize', '--shrink', 'IMG', '1M']],
    ['stale', ['resize', 'IMG', '8M']],
    ['stale', ['resize', '--shrink', 'IMG', '1M']],
    ['snap', ['resize', 'IMG', '6M']],
    ['small', ['resize', 'IMG', '64M']],
    ['small', ['resize', '--shrink', 'IMG', '512k']],
  ];
  for (const [v, [image, args]] of versionMatrix(cases)) same(v, image, args);
  // Through the sandboxed guest once (the result and its two-line error cross the protocol).
  same('10.0', 'inuse', ['resize', 'IMG', '8M'], { sandboxed: true });
  for (const [v, args] of [['7.2', ['resize', 'IMG', '1M']], ['10.0', ['resize', 'IMG', '0']]] as const) same(v, 'datafile', [...args], { files: ['dd.data'] });
  for (const [v, args] of [['7.2', ['resize', 'IMG', '8M']], ['10.0', ['resize', '--shrink', 'IMG', '1M']]] as const) same(v, 'dfinuse', [...args], { files: ['dd.data'] });
});

test('snapshot -c/-d/-a with bitmaps or a stale extension, failures included, as qemu writes them', () => {
  const cases: [string, string[]][] = [
    ['two', ['snapshot', '-c', 's2', 'IMG']],
    ['inuse', ['snapshot', '-c', 's2', 'IMG']],
    ['small', ['snapshot', '-c', 's2', 'IMG']],
    ['snap', ['snapshot', '-c', 's2', 'IMG']],
    ['snap', ['snapshot', '-d', 's1', 'IMG']],
    ['snap', ['snapshot', '-d', 'nope', 'IMG']],
    // qemu refuses to apply while the image has bitmaps, even a snapshot it does not have.
    ['snap', ['snapshot', '-a', 's1', 'IMG']],
    ['snap', ['snapshot', '-a', 'nope', 'IMG']],
    ['stalesnap', ['snapshot', '-c', 's2', 'IMG']],
    ['stalesnap', ['snapshot', '-d', 's1', 'IMG']],
    ['stalesnap', ['snapshot', '-a', 's1', 'IMG']],
  ];
  for (const [v, [image, args]] of versionMatrix(cases)) same(v, image, args);
  same('7.2', 'snap', ['snapshot', '-a', 's1', 'IMG'], { sandboxed: true });
});

test('check -r on a stale extension drops it as qemu does; bitmaps with snapshots are refused, nothing written', () => {
  const cases: [string, string][] = [['stale', 'leaks'], ['stale', 'all'], ['two', 'leaks'], ['two', 'all']];
  for (const [v, [image, mode]] of versionMatrix(cases)) same(v, image, ['check', '-r', mode, 'IMG']);
  // qemu's check -r open of such an image loses the snapshots (then frees their clusters as leaks).
  for (const image of ['snap', 'stalesnap']) {
    const r = dirs.run('10.0', 'x.qcow2', images[image], ['check', '-r', 'leaks', 'x.qcow2'], { viaEnv: true });
    assert.match(r.qemu.stdout, /leaked clusters/, `${image}: qemu repairs the snapshot's clusters as leaks`);
    assert.equal(r.qemuFile.readUInt32BE(60), 0, `${image}: qemu's file has no snapshot left`);
    assert.match(r.instar.stderr, /instar cannot repair this qcow2 image \(it has persistent bitmaps and internal snapshots/, image);
    assert.notEqual(r.instar.status, 0, image);
    assert.ok(r.instarFile.equals(images[image]), `${image}: instar wrote nothing`);
  }
});

test('convert -n into a qcow2 with bitmaps or a stale extension: the writes recorded, the bitmaps stored anew, as qemu does', () => {
  const cases: [string, string, string[]][] = [
    ['two', 'src4.qcow2', []],
    ['two', 'src4.qcow2', ['--target-is-zero']],
    ['inuse', 'src4.qcow2', []],
    ['stale', 'src4.qcow2', []],
    ['small', 'src1.qcow2', []],
    ['small', 'src1.qcow2', ['-S', '0']],
  ];
  for (const [v, [image, source, extra]] of versionMatrix(cases)) same(v, image, ['convert', '-n', ...extra, '-O', 'qcow2', source, 'IMG'], { files: [source] });
});

test('rebase -u of a qcow2 with bitmaps: the header change between the open and the close, its failure too, as qemu writes them', () => {
  const cases: [string, string[]][] = [
    ['two', ['rebase', '-u', '-b', 'base.qcow2', '-F', 'qcow2', 'IMG']],
    ['two', ['rebase', '-u', '-b', '', 'IMG']],
    // No backing format: qemu's change fails after the open (EINVAL), the close still stores the bitmaps.
    ['two', ['rebase', '-u', '-b', 'base.qcow2', 'IMG']],
    ['inuse', ['rebase', '-u', '-b', 'base.qcow2', '-F', 'qcow2', 'IMG']],
    ['small', ['rebase', '-u', '-b', 'base.qcow2', '-F', 'qcow2', 'IMG']],
  ];
  for (const [v, [image, args]] of versionMatrix(cases)) same(v, image, args);
});

test('bitmaps sharing a table are refused with nothing written, before and after qemu-img\'s own checks', () => {
  // b0's directory entry (32 bytes: its name is 2 bytes) names b1's table.
  const hostile = Buffer.from(images.two);
  const dir = directoryOffset(hostile);
  hostile.copy(hostile, dir, dir + 32, dir + 40);
  for (const args of [['resize', 'x.qcow2', '8M'], ['resize', 'x.qcow2', '1M'], ['snapshot', '-c', 's', 'x.qcow2'], ['check', '-r', 'all', 'x.qcow2'], ['rebase', '-u', '-b', '', 'x.qcow2']]) {
    const r = dirs.run('10.0', 'x.qcow2', hostile, args, { viaEnv: true, skipQemu: true });
    assert.equal(r.instar.status, 1, args.join(' '));
    assert.match(r.instar.stderr, /^qemu-img: .*instar refuses this qcow2 image: the table of bitmap 'b1' overlaps the table of bitmap 'b0'; nothing was written\)?(; nothing was written)?\n$/, args.join(' '));
    assert.ok(r.instarFile.equals(hostile), `${args.join(' ')}: nothing written`);
  }
});

/** The plan for an image written to `path`, its first `n` writes applied; returns the plan's write count. */
function cut(path: string, image: Buffer, n: number, plan: (dev: FdDevice) => RepairStep[]): number {
  writeFileSync(path, image);
  const fd = openSync(path, 'r+');
  try {
    const dev = new FdDevice(fd, true);
    const steps = plan(dev);
    applyRepair(dev, steps, { stopAfterWrites: n });
    return writeCount(steps);
  } finally {
    closeSync(fd);
  }
}

test('every prefix of the writes of a resize and a snapshot -c with bitmaps leaves an image qemu-img checks with leaks (and harmless COPIED flags) at most', () => {
  const path = join(dirs.root, 'cut.qcow2');
  const resize = (size: number) => (dev: FdDevice) => {
    const plan = qcow2Resize.plan(qcow2Driver.open(dev, { writable: true }), dev, { newSize: size, preallocation: 'off' });
    assert.ok('steps' in plan, 'a resize plan');
    return plan.steps;
  };
  const create = (dev: FdDevice) => {
    const plan = qcow2Snapshots.create(dev, 's2', { sec: 1_700_000_000, nsec: 0 });
    assert.ok('steps' in plan && plan.steps && !('errno' in plan), 'a snapshot plan');
    return plan.steps;
  };
  // The fewest writes each plan has (the open's three, the change's, the close's).
  const cases: [string, string, (dev: FdDevice) => RepairStep[], string[], number][] = [
    ['two', 'grown', resize(2 ** 40), ['resize', path, '1T'], 8],
    ['small', 'shrunk', resize(512 * 1024), ['resize', '--shrink', path, '512k'], 8],
    ['stale', 'grown', resize(8 * 2 ** 20), ['resize', path, '8M'], 2],
    ['snap', 'snapshot', create, [], 8],
  ];
  for (const [image, what, plan, qemuArgs, fewest] of cases) {
    let total = Infinity;
    for (let n = 0; n <= total; n++) {
      total = cut(path, images[image], n, plan);
      const check = runQemu('10.0', ['check', path]);
      const label = `${image} ${what} after ${n} of ${total} writes`;
      // Leaks, and (snapshot -c, as its own crash test allows) COPIED flags cleared where the
      // refcount is 1; between the open's two header writes the extension reads as stale, as a
      // crash of qemu's own open leaves it.
      const errors = (check.stdout + check.stderr).split('\n').filter((l) => /^(ERROR|Warning|qemu-img:)/.test(l));
      for (const l of errors) assert.match(l, /^ERROR OFLAG_COPIED (data|L2) cluster: .* refcount=1$|^qemu-img: warning: a program lacking bitmap support/, `${label}: ${l}`);
      assert.ok([0, 2, 3].includes(check.status ?? -1), `${label}: check exits ${check.status}: ${check.stdout}${check.stderr}`);
    }
    assert.ok(total >= fewest, `${image} ${what}: ${total} writes`);
    if (qemuArgs.length === 0) continue;
    // All writes: qemu's bytes (the differential tests compare the CLI; this checks the planner alone).
    const done = readFileSync(path);
    writeFileSync(path, images[image]);
    assert.equal(runQemu('10.0', qemuArgs).status, 0);
    assert.ok(done.equals(readFileSync(path)), `${image} ${what}: all writes give qemu's bytes`);
  }
});
