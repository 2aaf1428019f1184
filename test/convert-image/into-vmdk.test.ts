// convert -n into an existing monolithicSparse VMDK against qemu-img 7.2 and 10.0: each tool
// writes into its own copy of the same image. qemu gives the descriptor a random CID on the
// first write, so the CLI runs compare the files with the CID's value masked (everything else
// byte for byte, the descriptor's text included); one run then takes qemu's CID and must give
// qemu's file exactly (the descriptor area's stale tail too). Hostile tables are refused with
// nothing written; every prefix of the writes leaves an image qemu-img opens and checks.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { scratch, qemu, type Scratch } from './harness.ts';
import { runInto, sameInto, sourceDisk } from './into-harness.ts';
import { everyPrefixOpens, runStopped } from './into-crash.ts';

let s: Scratch;
const at = (name: string) => join(s.dir, name);
const MiB = 1024 * 1024;
const CID_AREA = 20 * 512;
const qcow2Source = ['-f', 'qcow2', '../src.qcow2'];

/** The descriptor area's position (the header's descriptor offset, in sectors). */
const descArea = (file: Buffer) => Number(file.readBigUInt64LE(28)) * 512;

function cidOf(file: Buffer, start = descArea(file)): string {
  const area = file.subarray(start, start + CID_AREA);
  return /(?:^|\n)CID=([0-9a-f]+)\n/.exec(area.toString('latin1'))![1];
}

/** The file with the descriptor's CID value masked and the area past the descriptor's text zeroed. */
function maskCid(file: Buffer, start = descArea(file)): Buffer {
  const out = Buffer.from(file);
  const area = out.subarray(start, start + CID_AREA);
  const end = area.indexOf(0);
  const text = area.subarray(0, end < 0 ? CID_AREA : end).toString('latin1').replace(/(^|\n)CID=[0-9a-f]+\n/, '$1CID=?\n');
  area.fill(0);
  area.write(text, 'latin1');
  return out;
}

before(() => {
  s = scratch();
  const disk = sourceDisk(7);
  writeFileSync(at('src.raw'), disk);
  writeFileSync(at('head.raw'), disk.subarray(0, 300 * 1024));
  qemu(['create', '-q', '-f', 'qcow2', at('src.qcow2'), '3M']);
  qemu(['-f', 'qcow2', '-c', 'write -P 0x11 0 64k', '-c', 'write -P 0 1M 64k', '-c', 'write -z 2M 64k', '-c', 'write -P 5 2500k 4k', at('src.qcow2')], undefined, '10.0', 'qemu-io');
  qemu(['create', '-q', '-f', 'vmdk', at('empty.vmdk'), '4M']);
  // Grains allocated out of order, data where the sources have zeros, data past their end.
  qemu(['create', '-q', '-f', 'vmdk', at('part.vmdk'), '6M']);
  qemu(['-f', 'vmdk', '-c', 'write -P 0x33 2M 4k', '-c', 'write -P 0x44 64k 128k', '-c', 'write -P 0x55 5M 64k', at('part.vmdk')], undefined, '10.0', 'qemu-io');
  qemu(['create', '-q', '-f', 'vmdk', at('small.vmdk'), '2M']);
  // Flat extents: one file, and one per 2 GiB (a single one here), data past the sources' end.
  for (const [name, subformat] of [['flat.vmdk', 'monolithicFlat'], ['flat2g.vmdk', 'twoGbMaxExtentFlat']]) {
    qemu(['create', '-q', '-f', 'vmdk', '-o', `subformat=${subformat}`, at(name), '4M']);
    qemu(['-f', 'vmdk', '-c', 'write -P 0x33 3M 512k', '-c', 'write -P 0x34 100k 8k', at(name)], undefined, '10.0', 'qemu-io');
  }
  // Its extent file is too short.
  writeFileSync(at('short.vmdk'), readFileSync(at('flat.vmdk')).toString('latin1').replace('flat-flat.vmdk', 'short-flat.vmdk'), 'latin1');
  writeFileSync(at('short-flat.vmdk'), readFileSync(at('flat-flat.vmdk')).subarray(0, MiB));
  // A child whose new grains start from its parent's data (qemu's copy-on-write), one with a stale parentCID.
  qemu(['create', '-q', '-f', 'vmdk', at('parent.vmdk'), '6M']);
  qemu(['-f', 'vmdk', '-c', 'write -P 0x77 0 6M', at('parent.vmdk')], undefined, '10.0', 'qemu-io');
  qemu(['create', '-q', '-f', 'vmdk', '-b', 'parent.vmdk', '-F', 'vmdk', at('child.vmdk'), '6M']);
  qemu(['-f', 'vmdk', '-c', 'write -P 0x11 2M 64k', at('child.vmdk')], undefined, '10.0', 'qemu-io');
  const stale = readFileSync(at('child.vmdk'));
  const cidAt = stale.indexOf('parentCID=') + 'parentCID='.length;
  stale.write(stale[cidAt] === 0x30 ? '1' : '0', cidAt, 'latin1');
  writeFileSync(at('stale.vmdk'), stale);
  // Data first in the child's allocated grain (2M), then in one it must allocate (with --target-is-zero: no zeros written before).
  qemu(['create', '-q', '-f', 'qcow2', at('late.qcow2'), '3M']);
  qemu(['-f', 'qcow2', '-c', 'write -P 0x66 2M 64k', '-c', 'write -P 0x67 2500k 4k', at('late.qcow2')], undefined, '10.0', 'qemu-io');
  // Two grain tables (32 MiB each), for the hostile edits.
  qemu(['create', '-q', '-f', 'vmdk', at('big.vmdk'), '64M']);
  qemu(['create', '-q', '-f', 'vmdk', '-o', 'subformat=streamOptimized', at('stream.vmdk'), '4M']);
  qemu(['create', '-q', '-f', 'vmdk', '-o', 'subformat=twoGbMaxExtentSparse', at('split.vmdk'), '4M']);
  qemu(['-f', 'vmdk', '-c', 'write -P 0x33 3M 512k', '-c', 'write -P 0x34 100k 8k', at('split.vmdk')], undefined, '10.0', 'qemu-io');
  // Two extents, and a source whose data straddles the boundary between them.
  qemu(['create', '-q', '-f', 'vmdk', '-o', 'subformat=twoGbMaxExtentSparse', at('split2.vmdk'), '2100M']);
  qemu(['create', '-q', '-f', 'qcow2', at('straddle.qcow2'), '2100M']);
  qemu(['-f', 'qcow2', '-c', 'write -P 0x41 2047M 2M', '-c', 'write -P 0x42 5M 100k', at('straddle.qcow2')], undefined, '10.0', 'qemu-io');
  // Zeroed grains: data, a zeroed grain, and zero runs in the source that start and end inside grains.
  qemu(['create', '-q', '-f', 'vmdk', '-o', 'zeroed_grain=on', at('zeroed.vmdk'), '5M']);
  qemu(['-f', 'vmdk', '-c', 'write -P 0x22 1M 1M', '-c', 'write -z 3M 64k', '-c', 'write -P 0x23 4M 64k', at('zeroed.vmdk')], undefined, '10.0', 'qemu-io');
  const runs = Buffer.alloc(4 * MiB, 0x5a);
  for (const [start, end] of [[100000, 700000], [MiB, MiB + 300000], [2 * MiB + 5000, 3 * MiB + 70000]]) runs.fill(0, start, end);
  writeFileSync(at('runs.raw'), runs);
  writeFileSync(at('runs-head.raw'), runs.subarray(0, 1200 * 1024));
});
after(() => s.cleanup());

test('convert -n into a monolithicSparse VMDK (sandboxed): grains allocated in order, the zeros too, a new CID', async () => {
  const runs = await sameInto(s.dir, 'empty', 'empty.vmdk', ['-n', '-O', 'vmdk', ...qcow2Source, 'empty.vmdk'], true, maskCid);
  for (const r of runs) assert.notEqual(cidOf(r.target), cidOf(readFileSync(at('empty.vmdk'))), 'the CID was not updated');
});

test('convert -n into a VMDK: partly allocated and larger, a raw source, -S 0, --target-is-zero, -B, --target-image-opts with -p', async () => {
  await sameInto(s.dir, 'part', 'part.vmdk', ['-n', '-O', 'vmdk', ...qcow2Source, 'part.vmdk'], false, maskCid);
  await sameInto(s.dir, 'raw', 'part.vmdk', ['-n', '-O', 'vmdk', '-f', 'raw', '../src.raw', 'part.vmdk'], false, maskCid);
  await sameInto(s.dir, 'S0', 'part.vmdk', ['-n', '-O', 'vmdk', '-S', '0', ...qcow2Source, 'part.vmdk'], false, maskCid);
  await sameInto(s.dir, 'is-zero', 'part.vmdk', ['-n', '-O', 'vmdk', '--target-is-zero', ...qcow2Source, 'part.vmdk'], false, maskCid);
  await sameInto(s.dir, 'B', 'part.vmdk', ['-n', '-O', 'vmdk', '-B', 'empty.vmdk', ...qcow2Source, 'part.vmdk'], false, maskCid);
  await sameInto(s.dir, 'opts', 'part.vmdk', ['-n', '-p', '--target-image-opts', ...qcow2Source, 'driver=vmdk,file.filename=part.vmdk'], false, maskCid);
  // -c: qemu's vmdk driver takes compressed writes into a plain sparse extent as plain ones.
  const [compressed] = await sameInto(s.dir, 'c', 'part.vmdk', ['-n', '-O', 'vmdk', '-c', '-f', 'raw', '../src.raw', 'part.vmdk'], false, maskCid);
  assert.equal(compressed.result.status, 0, compressed.result.stderr);
  // -c -p: qemu copies a grain at a time, its progress too: a source ending inside a grain counts that grain's rest.
  const [progress] = await sameInto(s.dir, 'c-p', 'part.vmdk', ['-n', '-O', 'vmdk', '-c', '-p', '-f', 'raw', '../runs-head.raw', 'part.vmdk'], false, maskCid);
  assert.ok(progress.result.stdout.split('\r').length > 4, progress.result.stdout);
});

test('convert -n into VMDKs of extent files (flat, split sparse; sandboxed): the extents written as qemu writes them, the descriptor file\'s CID', async () => {
  for (const [name, extent] of [['flat.vmdk', 'flat-flat.vmdk'], ['flat2g.vmdk', 'flat2g-f001.vmdk'], ['split.vmdk', 'split-s001.vmdk']]) {
    for (const [label, args] of [['', ['-f', 'qcow2', '../src.qcow2']], ['-raw-S0', ['-S', '0', '-f', 'raw', '../src.raw']]] as const) {
      const runs = await sameInto(s.dir, `${name}${label}`, name, ['-n', '-O', 'vmdk', ...args, name], label === '', (f) => maskCid(f, 0), [extent]);
      for (const r of runs) {
        assert.equal(r.result.status, 0, r.result.stderr);
        assert.notEqual(cidOf(r.target, 0), cidOf(readFileSync(at(name)), 0), `${name}: the CID was not updated`);
      }
      // The extents, as each tool left them.
      for (const v of ['7.2', '10.0']) {
        const dir = (tool: string) => at(`${name}${label}-${tool}-${v}`);
        assert.ok(readFileSync(join(dir('instar'), extent)).equals(readFileSync(join(dir(v), extent))), `${name}${label} (${v}): the extent differs from qemu-img's`);
      }
    }
  }
  const extents = ['split2-s001.vmdk', 'split2-s002.vmdk'];
  const runs = await sameInto(s.dir, 'split2', 'split2.vmdk', ['-n', '-O', 'vmdk', '--target-is-zero', '-f', 'qcow2', '../straddle.qcow2', 'split2.vmdk'], false, (f) => maskCid(f, 0), extents);
  assert.ok(runs.every((r) => r.result.status === 0), runs[0].result.stderr);
  for (const extent of extents) assert.ok(!readFileSync(join(at('split2-instar-10.0'), extent)).equals(readFileSync(at(extent))), `${extent} was not written`);
  for (const v of ['7.2', '10.0']) {
    for (const extent of extents) {
      assert.ok(readFileSync(join(at(`split2-instar-${v}`), extent)).equals(readFileSync(join(at(`split2-${v}-${v}`), extent))), `split2 (${v}): ${extent} differs from qemu-img's`);
    }
  }
  // An extent file the sources read: refused before anything is written, as qemu refuses it (the
  // source holds it unshared for writing: qemu's locks, 14efe67; both oracles print this).
  const same = await runInto(s.dir, 'instar', '10.0', 'flat-same', 'flat.vmdk', ['-n', '-O', 'vmdk', '-f', 'raw', 'flat-flat.vmdk', 'flat.vmdk'], false, ['flat-flat.vmdk']);
  assert.deepEqual([same.result.status, same.result.stderr], [1, 'qemu-img: Could not open \'flat.vmdk\': Failed to get "write" lock\nIs another process using the image [flat-flat.vmdk]?\n']);
  assert.ok(readFileSync(join(at('flat-same-instar-10.0'), 'flat-flat.vmdk')).equals(readFileSync(at('flat-flat.vmdk'))), 'the extent was written');
});

test('convert -n into a VMDK with zeroed grains: whole zero grains zeroed, partial ones written, -S 0, --target-is-zero', async () => {
  for (const [label, extra] of [['zeroed', []], ['zeroed-S0', ['-S', '0']], ['zeroed-is-zero', ['--target-is-zero']], ['zeroed-qcow2', []]] as const) {
    const source = label === 'zeroed-qcow2' ? qcow2Source : ['-f', 'raw', '../runs.raw'];
    const [ours] = await sameInto(s.dir, label, 'zeroed.vmdk', ['-n', '-O', 'vmdk', ...extra, ...source, 'zeroed.vmdk'], false, maskCid);
    assert.equal(ours.result.status, 0, `${label}: ${ours.result.stderr}`);
  }
});

test('convert -n into a VMDK with a parent: new grains start from the parent\'s data, -S 0, --target-is-zero, the parent untouched', async () => {
  const parent = readFileSync(at('parent.vmdk'));
  for (const [label, extra] of [['child', []], ['child-S0', ['-S', '0']], ['child-is-zero', ['--target-is-zero']]] as const) {
    const runs = await sameInto(s.dir, label, 'child.vmdk', ['-n', '-O', 'vmdk', ...extra, '-f', 'raw', '../src.raw', 'child.vmdk'], false, maskCid, ['parent.vmdk']);
    assert.ok(runs.every((r) => r.result.status === 0), `${label}: ${runs[0].result.stderr}`);
  }
  assert.ok(readFileSync(at('parent.vmdk')).equals(parent), 'the parent was written');
});

test('convert -n into a VMDK whose parentCID is stale: its first allocating write fails as in qemu-img, the writes before it done', async () => {
  const before = readFileSync(at('stale.vmdk'));
  const [first] = await sameInto(s.dir, 'stale', 'stale.vmdk', ['-n', '-O', 'vmdk', ...qcow2Source, 'stale.vmdk'], false, maskCid, ['parent.vmdk']);
  assert.deepEqual([first.result.status, first.result.stderr], [1, 'qemu-img: error while writing at byte 0: Invalid argument\n']);
  assert.ok(first.target.equals(before), 'the target was written');
  const [later] = await sameInto(s.dir, 'stale-late', 'stale.vmdk', ['-n', '-O', 'vmdk', '--target-is-zero', '-f', 'qcow2', '../late.qcow2', 'stale.vmdk'], false, maskCid, ['parent.vmdk']);
  // qemu names the start of its chunk (the source's cluster), not of the bytes it writes (-S skips the zeros before them).
  assert.deepEqual([later.result.status, later.result.stderr], [1, `qemu-img: error while writing at byte ${2496 * 1024}: Invalid argument\n`]);
  assert.notEqual(cidOf(later.target), cidOf(before), 'the grain at 2M was not written');
});

test('convert -n into a VMDK with qemu\'s CID gives qemu\'s file byte for byte', async () => {
  const theirs = await runInto(s.dir, '10.0', '10.0', 'exact', 'part.vmdk', ['-n', '-O', 'vmdk', '-f', 'raw', '../src.raw', 'part.vmdk']);
  assert.equal(theirs.result.status, 0, theirs.result.stderr);
  const cid = parseInt(cidOf(theirs.target), 16);
  const ours = runStopped({ source: at('src.raw'), target: at('part.vmdk'), format: 'vmdk', dir: s.dir, label: 'exact', options: { vmdkCid: cid } }, at('exact-op'), Infinity);
  assert.ok(readFileSync(ours).equals(theirs.target), 'the file differs from qemu-img\'s');
});

test('convert -n into a VMDK smaller than the source: qemu\'s message, nothing written', async () => {
  const [ours] = await sameInto(s.dir, 'smaller', 'small.vmdk', ['-n', '-O', 'vmdk', ...qcow2Source, 'small.vmdk']);
  assert.equal(ours.result.status, 1);
  assert.ok(ours.target.equals(readFileSync(at('small.vmdk'))), 'the target was written');
});

test('convert -n into other VMDK subformats, hostile tables: refused in one line, nothing written', async () => {
  const gd = (f: Buffer) => Number(f.readBigUInt64LE(56)) * 512;
  const hostile = (name: string, edit: (f: Buffer) => void) => {
    const f = readFileSync(at('big.vmdk'));
    edit(f);
    writeFileSync(at(name), f);
  };
  // The first grain table past the end of the file; the second one on top of the first; a grain entry past the end of the file.
  hostile('gt-past-eof.vmdk', (f) => f.writeUInt32LE(1_000_000, gd(f)));
  hostile('gt-overlap.vmdk', (f) => f.writeUInt32LE(f.readUInt32LE(gd(f)), gd(f) + 4));
  hostile('grain-past-eof.vmdk', (f) => f.writeUInt32LE(1_000_000, f.readUInt32LE(gd(f)) * 512));
  const cases: [string, string][] = [
    ['stream.vmdk', 'instar cannot convert into an existing vmdk image (-n) of subformat streamOptimized yet; nothing was written'],
    ['zeroed.vmdk', 'instar cannot convert into an existing vmdk image (-n) with -c yet (zeroed grains or a parent); nothing was written'],
    ['gt-past-eof.vmdk', 'instar cannot convert into this vmdk image (its grain table lies outside its metadata area); nothing was written'],
    ['gt-overlap.vmdk', 'instar cannot convert into this vmdk image (its grain table overlaps its grain table); nothing was written'],
    ['grain-past-eof.vmdk', 'instar cannot convert into this vmdk image (a grain entry points outside its grains (sector 1000000)); nothing was written'],
  ];
  cases.push(['short.vmdk', "instar cannot convert into this vmdk image (its extent 'short-flat.vmdk' lies past the end of its file); nothing was written"]);
  for (const [name, message] of cases) {
    const arg = name;
    const before = readFileSync(at(name));
    const compress = name === 'zeroed.vmdk' ? ['-c'] : [];
    const ours = await runInto(s.dir, 'instar', '10.0', `refused-${name}`, name, ['-n', '-O', 'vmdk', ...compress, ...qcow2Source, arg], false, name === 'short.vmdk' ? ['short-flat.vmdk'] : []);
    assert.deepEqual([ours.result.status, ours.result.stderr], [1, `qemu-img: ${message}\n`], name);
    assert.ok(ours.target.equals(before) && readFileSync(at(name)).equals(before), `${name}: the target was written`);
  }
});

test('convert -n into a VMDK stopped after each prefix of its writes leaves an image qemu-img opens and checks', () => {
  const k = everyPrefixOpens({ source: at('head.raw'), target: at('part.vmdk'), format: 'vmdk', dir: s.dir, label: 'vmdk', options: { vmdkCid: 0x1234 } });
  assert.ok(k > 5, `${k} writes`);
  const z = everyPrefixOpens({ source: at('runs-head.raw'), target: at('zeroed.vmdk'), format: 'vmdk', dir: s.dir, label: 'zeroed', options: { vmdkCid: 0x1234 } });
  assert.ok(z > 5, `${z} writes`);
});

test('convert -n into a VMDK whose createType holds a terminal escape: qemu prints it raw, instar escaped', async () => {
  const name = 'escape.vmdk';
  writeFileSync(at(name), readFileSync(at('flat.vmdk')).toString('latin1').replace('createType="monolithicFlat"', 'createType="mono\x1b[31mlithic"'), 'latin1');
  const args = ['-n', '-O', 'vmdk', ...qcow2Source, name];
  const theirs = await runInto(s.dir, '10.0', '10.0', 'escape', name, args, false, ['flat-flat.vmdk']);
  assert.match(theirs.result.stderr, /Unsupported image type 'mono\x1b\[31mlithic'/);
  const ours = await runInto(s.dir, 'instar', '10.0', 'escape', name, args, false, ['flat-flat.vmdk']);
  assert.deepEqual([ours.result.status, ours.result.stderr], [1, `qemu-img: Could not open '${name}': Unsupported image type 'mono\\x1b[31mlithic'\n`]);
});
