// check -r on qcow2 images with internal snapshots whose writable open rewrites the header
// (persistent bitmaps, an unknown autoclear bit). qemu-img 7.2 and 10.0 open the image in check
// mode without reading the snapshot table, so the header they rewrite names no snapshots: the
// snapshots are lost and their clusters repaired as leaks. instar refuses that by default (nothing
// written) and, with --unsafe-quirks, does what qemu does: output, exit status and file byte for
// byte, with refcount errors placed in snapshot tables, bitmap tables and the bitmap directory.
// Where the open rewrites no header (the bitmaps are in use already) qemu keeps the snapshots, and
// so does instar, without the quirk.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { VERSIONS, runQemu } from '../helpers/oracles.ts';
import { tiered } from '../helpers/long.ts';
import { layout, readU64, setRefcount16, writeU64 } from './qcow2-edit.ts';
import { assertRepairsMatch, qemuOk, repairCases } from './repair-more-matrix.ts';
import { RepairDirs, assertSameRun, planPrefix } from './repair-harness.ts';
import { qcow2Driver } from '../../src/formats/qcow2/driver.ts';
import { checkQcow2 } from '../../src/formats/qcow2/check.ts';
import { repairQcow2 } from '../../src/formats/qcow2/repair-refcounts.ts';

const dirs = new RepairDirs();
const CLUSTER = 65536;
const QUIRKS = { instarArgs: ['--unsafe-quirks'] };
/** Images both -r modes repair; `allOnly`: those only -r all repairs (-r leaks needs a rebuild). */
const images: Record<string, Uint8Array> = {};
const allOnly: Record<string, Uint8Array> = {};
/** Images instar refuses even with --unsafe-quirks, writing nothing. */
const refusedAnyway: Record<string, Uint8Array> = {};

/** Offsets of the first bitmap's directory entry and table, and of the first snapshot's L1 table. */
function places(path: string): { directory: number; table: number; snapshotL1: number } {
  const bytes = readFileSync(path);
  let pos = bytes.readUInt32BE(100);
  for (;;) {
    const type = bytes.readUInt32BE(pos);
    const length = bytes.readUInt32BE(pos + 4);
    assert.notEqual(type, 0, 'a bitmaps extension');
    if (type === 0x23852875) {
      const directory = Number(bytes.readBigUInt64BE(pos + 24));
      return { directory, table: Number(bytes.readBigUInt64BE(directory)), snapshotL1: Number(readU64(path, layout(path).snapshotsOffset)) };
    }
    pos += 8 + Math.ceil(length / 8) * 8;
  }
}

/** 4 MiB of qcow2: data, bitmap b0 (with a dirty bit), snapshot s1, a write after it; then `edit`. */
function build(name: string, edit: (path: string) => void, opts: { bitmap?: boolean } = {}): Uint8Array {
  const path = join(dirs.root, name);
  qemuOk(runQemu('7.2', ['create', '-q', '-f', 'qcow2', path, '4M']));
  qemuOk(runQemu('7.2', ['-c', 'write -P 0x5 0 128k', path], {}, 'qemu-io'));
  if (opts.bitmap !== false) qemuOk(runQemu('7.2', ['bitmap', '--add', path, 'b0']));
  qemuOk(runQemu('7.2', ['-c', 'write -P 0x6 1M 64k', path], {}, 'qemu-io'));
  qemuOk(runQemu('7.2', ['snapshot', '-c', 's1', path]));
  qemuOk(runQemu('7.2', ['-c', 'write -P 0x7 0 64k', path], {}, 'qemu-io'));
  edit(path);
  return new Uint8Array(readFileSync(path));
}

const cluster = (offset: number) => Math.floor(offset / CLUSTER);
const unknownAutoclear = (p: string) => writeU64(p, 88, 0x20n);

before(() => {
  images['no damage'] = build('clean.qcow2', () => {});
  images.leaks = build('leaks.qcow2', (p) => {
    const end = Math.ceil(readFileSync(p).length / CLUSTER);
    truncateSync(p, (end + 3) * CLUSTER);
    setRefcount16(p, end, 1);
    setRefcount16(p, end + 2, 3);
  });
  images['snapshot L1 refcount too high'] = build('snapl1.qcow2', (p) => setRefcount16(p, cluster(places(p).snapshotL1), 2));
  images['snapshot L1 refcount 0'] = build('snapl1zero.qcow2', (p) => setRefcount16(p, cluster(places(p).snapshotL1), 0));
  images['snapshot table refcount too high'] = build('snaptab.qcow2', (p) => setRefcount16(p, cluster(layout(p).snapshotsOffset), 2));
  images['bitmap table refcount too high'] = build('bmtab.qcow2', (p) => setRefcount16(p, cluster(places(p).table), 2));
  images['bitmap data refcount too high'] = build('bmdata.qcow2', (p) => setRefcount16(p, cluster(Number(readU64(p, places(p).table) & 0x00fffffffffffe00n)), 2));
  images['bitmap directory refcount too high'] = build('bmdir.qcow2', (p) => setRefcount16(p, cluster(places(p).directory), 2));
  images['snapshot table past the end'] = build('snappast.qcow2', (p) => writeU64(p, 64, 100n * BigInt(CLUSTER)));
  images['snapshot table over the header'] = build('snaphdr.qcow2', (p) => writeU64(p, 64, 0n));
  images['snapshot L1 table past the end'] = build('snapl1past.qcow2', (p) => writeU64(p, layout(p).snapshotsOffset, 100n * BigInt(CLUSTER)));
  images['bitmap table over the header (qemu cannot open it)'] = build('bmhdr.qcow2', (p) => writeU64(p, places(p).directory, 0n));
  images['unknown autoclear bit, no bitmaps'] = build('autoclear.qcow2', unknownAutoclear, { bitmap: false });
  // A stored refcount of 0 under a referenced cluster: -r all rebuilds, qemu's -r leaks fails.
  allOnly['bitmap table refcount 0'] = build('bmtabzero.qcow2', (p) => setRefcount16(p, cluster(places(p).table), 0));
  allOnly['bitmap directory refcount 0'] = build('bmdirzero.qcow2', (p) => setRefcount16(p, cluster(places(p).directory), 0));
  // qemu's close then fails freeing the old table (EINVAL) after writing: instar refuses first.
  refusedAnyway['bitmap table past the end'] = build('bmpast.qcow2', (p) => writeU64(p, places(p).directory, 100n * BigInt(CLUSTER)));
});

after(() => dirs.remove());

test('check -r --unsafe-quirks with bitmaps (or an unknown autoclear bit) and snapshots: byte-identical to qemu-img, snapshots dropped as qemu drops them', () => {
  assertRepairsMatch(dirs, images, 'a.qcow2', {
    run: () => QUIRKS,
    also: (r, c, label) => {
      // qemu's open rewrote the header: no snapshot is left (a case qemu cannot open writes nothing).
      if (r.qemu.status !== 1) assert.equal(r.qemuFile.readUInt32BE(60), 0, `${label}: qemu dropped the snapshots`);
    },
  });
});

test('check -r all --unsafe-quirks where a bitmap structure has refcount 0: qemu\'s rebuild; -r leaks fails as qemu\'s', () => {
  for (const c of repairCases(Object.keys(allOnly))) {
    for (const mode of ['all', 'leaks'] as const) {
      const label = `${c.version} ${c.name} -r ${mode}`;
      const r = dirs.run(c.version, 'a.qcow2', allOnly[c.name], ['check', '-r', mode, 'a.qcow2'], QUIRKS);
      if (mode === 'all') {
        assertSameRun(r, label);
        assert.match(r.qemu.stderr, /Rebuilding refcount structure/, label);
        assert.ok(r.qemuFile.equals(r.instarFile), `${label}: repaired files differ`);
        continue;
      }
      // qemu's check fails (it needs a rebuild), then its close fails freeing the bitmap's old
      // structure after writing part of it: instar refuses before writing anything.
      assert.equal(r.qemu.status, 1, label);
      assert.equal(r.instar.status, 1, label);
      assert.match(r.instar.stderr, /^qemu-img: instar cannot repair this qcow2 image \(storing its bitmaps: the refcount of cluster \d+ would leave its range .*nothing was written\n$/, label);
      assert.ok(r.instarFile.equals(allOnly[c.name]), `${label}: instar wrote nothing`);
    }
  }
});

test('check -r without --unsafe-quirks refuses bitmaps or an unknown autoclear bit with snapshots, writing nothing', () => {
  const cases: [string, Uint8Array, RegExp][] = [
    ['bitmaps', images['no damage'], /it has persistent bitmaps and internal snapshots: qemu-img would drop the snapshots; --unsafe-quirks does so too\); nothing was written/],
    ['autoclear', images['unknown autoclear bit, no bitmaps'], /it has an unknown autoclear bit and internal snapshots: qemu-img would drop the snapshots/],
  ];
  for (const [i, [name, bytes, message]] of cases.entries()) {
    const r = dirs.run(VERSIONS[i % 2], 'a.qcow2', bytes, ['check', '-r', i ? 'all' : 'leaks', 'a.qcow2']);
    assert.equal(r.qemuFile.readUInt32BE(60), 0, `${name}: qemu's repair drops the snapshots`);
    assert.equal(r.qemu.status, 0, name);
    assert.match(r.instar.stderr, message, name);
    assert.equal(r.instar.status, 1, name);
    assert.equal(r.instar.stdout, '', name);
    assert.ok(r.instarFile.equals(bytes), `${name}: instar wrote nothing`);
  }
});

test('check -r with snapshots and a bitmap already in use (the open rewrites no header): repaired as qemu does, snapshots kept, no quirk needed', () => {
  const bytes = Buffer.from(images.leaks);
  const { directory } = places(join(dirs.root, 'leaks.qcow2'));
  bytes.writeUInt32BE(bytes.readUInt32BE(directory + 12) | 1, directory + 12);
  for (const [i, mode] of (['leaks', 'all'] as const).entries()) {
    const label = `${VERSIONS[i]} -r ${mode}`;
    const r = dirs.run(VERSIONS[i], 'a.qcow2', bytes, ['check', '-r', mode, 'a.qcow2']);
    assertSameRun(r, label);
    assert.match(r.qemu.stderr, /Repairing cluster/, label);
    assert.ok(r.qemuFile.equals(r.instarFile), `${label}: repaired files differ`);
    assert.equal(r.qemuFile.readUInt32BE(60), 1, `${label}: the snapshot is kept`);
  }
});

test('check -r --unsafe-quirks refuses what qemu\'s close cannot store (a bitmap table past the end), writing nothing', () => {
  for (const version of tiered(VERSIONS, (v) => v === '7.2')) {
    const bytes = refusedAnyway['bitmap table past the end'];
    const r = dirs.run(version, 'a.qcow2', bytes, ['check', '-r', 'all', 'a.qcow2'], { ...QUIRKS, sandboxed: true });
    assert.equal(r.qemu.status, 2, `${version}: qemu repairs part of it and reports corruptions`);
    assert.match(r.instar.stderr, /instar cannot repair this qcow2 image \(storing its bitmaps: .*nothing was written\n$/, version);
    assert.equal(r.instar.status, 1, version);
    assert.ok(r.instarFile.equals(bytes), `${version}: instar wrote nothing`);
  }
});

test('check -r --unsafe-quirks through the sandbox, JSON output, unknown autoclear bit without snapshots (no quirk needed)', () => {
  const r = dirs.run('10.0', 'a.qcow2', images.leaks, ['check', '-r', 'all', '--output=json', 'a.qcow2'], { ...QUIRKS, sandboxed: true });
  assertSameRun(r, 'sandboxed json');
  assert.ok(r.qemuFile.equals(r.instarFile), 'sandboxed json: files differ');
  const plain = build('plain.qcow2', (p) => {
    qemuOk(runQemu('7.2', ['snapshot', '-d', 's1', p]));
    unknownAutoclear(p);
  }, { bitmap: false });
  const q = dirs.run('7.2', 'a.qcow2', plain, ['check', '-r', 'leaks', 'a.qcow2']);
  assertSameRun(q, 'autoclear without snapshots');
  assert.ok(q.qemuFile.equals(q.instarFile), 'autoclear without snapshots: files differ');
  assert.equal(q.qemuFile.readBigUInt64BE(88), 0n, 'qemu cleared the unknown autoclear bit');
});

/**
 * What qemu-img check may say after a cut-short repair: leaks, and COPIED cleared where the
 * refcount already is 1 (harmless: qemu copies before writing). The repair lowers the dropped
 * snapshots' shared clusters to 1 before it sets their flags, as qemu does; the reverse order
 * would leave COPIED set on a cluster counted twice, which is the harmful kind.
 */
function findings(path: string, label: string): string[] {
  const r = runQemu('7.2', ['check', path], { timeoutMs: 20_000 });
  assert.ok([0, 2, 3].includes(r.status ?? -1), `${label}: check exit ${r.status}: ${r.stderr}`);
  return (r.stdout + r.stderr).split('\n').filter((l) => /^(ERROR|Leaked|Warning|qemu-img:)/.test(l));
}

/** `before`: what the damaged image's own check said (a prefix may still say it). */
function assertOnlyHarmless(path: string, label: string, before: readonly string[]): void {
  const lines = findings(path, label).filter((l) => !before.includes(l));
  // Between qemu's two header writes at open (its own order) the bitmaps read as inconsistent.
  const between = /^qemu-img: warning: a program lacking bitmap support modified this file, so all bitmaps are now considered inconsistent$/;
  for (const l of lines) assert.match(l, new RegExp(`^Leaked cluster \\d+ |^ERROR OFLAG_COPIED (data|L2) cluster: .* refcount=1$|${between.source}`), `${label}: ${l}`);
  const info = runQemu('7.2', ['info', path]);
  assert.equal(info.status, 0, `${label}: info ${info.stderr}`);
}

test('every prefix of a repair that drops the snapshots (then of its close) leaves an image qemu-img check opens, with only harmless findings', () => {
  const ctx = { qemuMajor: 10, unsafeQuirks: true };
  const cases = tiered([['leaks', images.leaks], ['bitmap table refcount 0', allOnly['bitmap table refcount 0']]] as const, ([n]) => n === 'leaks');
  const path = join(dirs.root, 'prefix.qcow2');
  for (const [name, bytes] of cases) {
    writeFileSync(path, bytes);
    const before = findings(path, name);
    let total = Infinity;
    for (let n = 0; n <= total; n++) {
      total = planPrefix(path, bytes, n, qcow2Driver, checkQcow2, repairQcow2, ctx);
      assertOnlyHarmless(path, `${name} after ${n} writes`, before);
    }
    assert.ok(total > 3, `${name}: the plan writes`);
    // The whole repair leaves what qemu leaves.
    const whole = dirs.run('10.0', 'a.qcow2', bytes, ['check', '-r', 'all', 'a.qcow2'], QUIRKS);
    assert.ok(readFileSync(path).equals(whole.qemuFile), `${name}: the complete plan is qemu's file`);
  }
});
