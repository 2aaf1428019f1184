// convert -O raw over sources of every format, built at test time: instar's output (sandboxed,
// the default) must hash equal to both oracles' outputs and be at least as sparse (plus slack).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BLOCK_SLACK, convertBoth, patternBytes, qemu, qemuIo, tempDir, writePattern } from './helpers.ts';
import { tiered } from '../helpers/long.ts';

const MiB = 1024 * 1024;
let dir: string;
let cleanup: () => void;
before(() => ({ dir, cleanup } = tempDir()));
after(() => cleanup());

/** A raw file with data islands and holes (written sparse). */
function sparseRaw(name: string, size: number, seed: number): string {
  const path = join(dir, name);
  writeFileSync(path, '');
  truncateSync(path, size);
  qemuIo(path, [`write -P ${seed % 250 + 1} 0 64k`, `write -P 3 ${size / 2} 100k`, `write -P 9 ${size - 4096} 4096`], 'raw');
  return name;
}

/** A raw file of seeded mixed content, the usual input to the oracles' converters. */
function mixedRaw(name: string, size: number, seed: number): string {
  writePattern(join(dir, name), size, seed);
  return name;
}

const create = (args: string[]) => qemu(['create', '-q', ...args.slice(0, -2), join(dir, args.at(-2)!), args.at(-1)!]);
const conv = (opts: string[], from: string, to: string) => qemu(['convert', ...opts, join(dir, from), join(dir, to)]);

/** name → builder returning the convert arguments (sources and options, output excluded). */
const cases: [string, () => string[]][] = [
  ['raw sparse', () => ['-f', 'raw', sparseRaw('s.raw', 8 * MiB, 1)]],
  ['raw mixed content', () => ['-f', 'raw', mixedRaw('m.raw', 4 * MiB, 2)]],
  ['raw size not a sector multiple', () => { writeFileSync(join(dir, 'odd.raw'), patternBytes(100_001, 3)); return ['-f', 'raw', 'odd.raw']; }],
  ['raw empty', () => { writeFileSync(join(dir, 'empty.raw'), ''); return ['-f', 'raw', 'empty.raw']; }],
  ['qcow2 plain', () => { conv(['-O', 'qcow2'], mixedRaw('q.src', 6 * MiB, 4), 'plain.qcow2'); return ['plain.qcow2']; }],
  ['qcow2 written islands', () => { create(['-f', 'qcow2', 'isl.qcow2', '64M']); qemuIo(join(dir, 'isl.qcow2'), ['write -P 1 0 1M', 'write -P 2 10M 3M', 'write -P 0 20M 256k']); return ['isl.qcow2']; }],
  ['qcow2 zlib compressed', () => { conv(['-O', 'qcow2', '-c'], mixedRaw('z.src', 6 * MiB, 5), 'zlib.qcow2'); return ['zlib.qcow2']; }],
  ['qcow2 zstd compressed', () => { conv(['-O', 'qcow2', '-c', '-o', 'compression_type=zstd'], mixedRaw('zs.src', 6 * MiB, 6), 'zstd.qcow2'); return ['zstd.qcow2']; }],
  ['qcow2 extended_l2 subclusters', () => {
    create(['-f', 'qcow2', '-o', 'extended_l2=on,cluster_size=128k', 'ext.qcow2', '16M']);
    qemuIo(join(dir, 'ext.qcow2'), ['write -P 5 4k 4k', 'write -P 6 132k 60k', 'write -z 128k 4k', 'write -P 7 5M 1M']);
    return ['ext.qcow2'];
  }],
  ['qcow2 zero clusters over data', () => {
    conv(['-O', 'qcow2'], mixedRaw('zc.src', 4 * MiB, 7), 'zc.qcow2');
    qemuIo(join(dir, 'zc.qcow2'), ['write -z 64k 512k', 'write -z -u 1M 1M']);
    return ['zc.qcow2'];
  }],
  ['qcow2 v2 (compat 0.10)', () => { conv(['-O', 'qcow2', '-o', 'compat=0.10'], mixedRaw('v2.src', 3 * MiB, 8), 'v2.qcow2'); return ['v2.qcow2']; }],
  ['qcow2 512-byte clusters', () => { conv(['-O', 'qcow2', '-o', 'cluster_size=512'], mixedRaw('c512.src', 1 * MiB, 9), 'c512.qcow2'); return ['c512.qcow2']; }],
  ['qcow2 2 MiB clusters', () => { conv(['-O', 'qcow2', '-o', 'cluster_size=2M'], mixedRaw('c2m.src', 5 * MiB, 10), 'c2m.qcow2'); return ['c2m.qcow2']; }],
  ['qcow2 backing chain of two', () => {
    conv(['-O', 'qcow2'], mixedRaw('b1.src', 4 * MiB, 11), 'b1-base.qcow2');
    create(['-f', 'qcow2', '-b', 'b1-base.qcow2', '-F', 'qcow2', 'b1-top.qcow2', '4M']);
    qemuIo(join(dir, 'b1-top.qcow2'), ['write -P 9 1M 128k', 'write -z 2M 64k']);
    return ['b1-top.qcow2'];
  }],
  ['qcow2 backing chain of three, raw at the bottom, top larger', () => {
    mixedRaw('b2-base.raw', 2 * MiB, 12);
    create(['-f', 'qcow2', '-b', 'b2-base.raw', '-F', 'raw', 'b2-mid.qcow2', '3M']);
    qemuIo(join(dir, 'b2-mid.qcow2'), ['write -P 4 512k 1M']);
    create(['-f', 'qcow2', '-b', 'b2-mid.qcow2', '-F', 'qcow2', 'b2-top.qcow2', '5M']);
    qemuIo(join(dir, 'b2-top.qcow2'), ['write -P 8 1536k 64k', 'write -P 6 4M 4k']);
    return ['b2-top.qcow2'];
  }],
  ['qcow2 internal snapshot by name (-l NAME)', () => snapshotImage('-l', 'first')],
  ['qcow2 internal snapshot by id (-l ID)', () => snapshotImage('-l', '1')],
  ['qcow2 snapshot.id= and snapshot.name=', () => snapshotImage('-l', 'snapshot.id=2,snapshot.name=second')],
  ['qcow2 snapshot.name= only', () => snapshotImage('-l', 'snapshot.name=first')],
  ['qcow2 external data file', () => {
    create(['-f', 'qcow2', '-o', `data_file=${join(dir, 'fresh-data.bin')}`, 'df.qcow2', '4M']);
    qemuIo(join(dir, 'df.qcow2'), ['write -P 3 0 256k', 'write -P 4 3M 64k']);
    return ['df.qcow2'];
  }],
  ['qcow2 external data file, data-file-raw', () => {
    create(['-f', 'qcow2', '-o', `data_file=${join(dir, 'fresh-raw-data.bin')},data_file_raw=on`, 'dfr.qcow2', '4M']);
    qemuIo(join(dir, 'dfr.qcow2'), ['write -P 5 64k 192k']);
    return ['dfr.qcow2'];
  }],
  ['vmdk monolithicSparse', () => { conv(['-O', 'vmdk'], mixedRaw('v.src', 5 * MiB, 13), 'sparse.vmdk'); return ['sparse.vmdk']; }],
  ['vmdk streamOptimized', () => { conv(['-O', 'vmdk', '-o', 'subformat=streamOptimized'], mixedRaw('vs.src', 5 * MiB, 14), 'stream.vmdk'); return ['stream.vmdk']; }],
  ['vmdk monolithicFlat', () => { conv(['-O', 'vmdk', '-o', 'subformat=monolithicFlat'], mixedRaw('vf.src', 3 * MiB, 15), 'flat.vmdk'); return ['flat.vmdk']; }],
  ['vmdk twoGbMaxExtentSparse', () => { conv(['-O', 'vmdk', '-o', 'subformat=twoGbMaxExtentSparse'], mixedRaw('v2s.src', 3 * MiB, 16), 'split.vmdk'); return ['split.vmdk']; }],
  ['vmdk twoGbMaxExtentFlat', () => { conv(['-O', 'vmdk', '-o', 'subformat=twoGbMaxExtentFlat'], mixedRaw('v2f.src', 3 * MiB, 17), 'splitflat.vmdk'); return ['splitflat.vmdk']; }],
  ['vpc dynamic', () => { conv(['-O', 'vpc'], mixedRaw('d.src', 5 * MiB, 18), 'dyn.vhd'); return ['dyn.vhd']; }],
  // instar does not guess a fixed VHD (it looks like raw to qemu's probe too): -f vpc.
  ['vpc fixed', () => { conv(['-O', 'vpc', '-o', 'subformat=fixed'], mixedRaw('f.src', 3 * MiB, 19), 'fixed.vhd'); return ['-f', 'vpc', 'fixed.vhd']; }],
  ['vhdx dynamic', () => { conv(['-O', 'vhdx'], mixedRaw('x.src', 5 * MiB, 20), 'dyn.vhdx'); return ['dyn.vhdx']; }],
  ['vhdx fixed', () => { conv(['-O', 'vhdx', '-o', 'subformat=fixed'], mixedRaw('xf.src', 3 * MiB, 21), 'fixed.vhdx'); return ['fixed.vhdx']; }],
  ['three sources concatenated', () => {
    conv(['-O', 'qcow2', '-c'], mixedRaw('cat1.src', 2 * MiB, 22), 'cat1.qcow2');
    conv(['-O', 'vmdk'], mixedRaw('cat2.src', 1 * MiB, 23), 'cat2.vmdk');
    conv(['-O', 'vpc'], sparseRaw('cat3.raw', 2 * MiB, 24), 'cat3.vhd');
    return ['cat1.qcow2', 'cat3.vhd', 'cat2.vmdk'];
  }],
  ['-S 0 fully allocates', () => { create(['-f', 'qcow2', 's0.qcow2', '8M']); qemuIo(join(dir, 's0.qcow2'), ['write -P 1 1M 64k']); return ['-S', '0', 's0.qcow2']; }],
  ['-S 64k', () => ['-S', '64k', '-f', 'raw', mixedRaw('s64.raw', 3 * MiB, 25)]],
  ['-S 512 over small zero runs', () => {
    const bytes = patternBytes(MiB, 26);
    for (let i = 0; i < bytes.length; i += 8192) bytes.fill(0, i, i + 1024);
    writeFileSync(join(dir, 's512.raw'), bytes);
    return ['-S', '512', '-f', 'raw', 's512.raw'];
  }],
  ['-U, -t, -T, -W, -m, --object accepted', () => { copyFileSync(join(dir, 'plain.qcow2'), join(dir, 'flags.qcow2')); return ['-U', '-t', 'none', '-T', 'writeback', '-W', '-m', '4', '--object', 'secret,id=s0,data=x', 'flags.qcow2']; }],
  // -t decides whether the target is flushed at the end (all but unsafe); the bytes are the same.
  ['-t writethrough -T off', () => ['-t', 'writethrough', '-T', 'off', 'plain.qcow2']],
  ['-t unsafe -T directsync', () => ['-t', 'unsafe', '-T', 'directsync', 'plain.qcow2']],
  ['--image-opts', () => ['--image-opts', 'driver=qcow2,file.filename=plain.qcow2']],
  // 320 MiB: big enough for two guests (split at 160 MiB), data across the split point.
  ['a disk copied by two guests on disjoint ranges', () => {
    create(['-f', 'qcow2', 'split.qcow2', '320M']);
    qemuIo(join(dir, 'split.qcow2'), ['write -P 1 0 64k', 'write -P 2 159M 2M', 'write -P 3 160M 4k', 'write -P 4 319M 1M']);
    return ['split.qcow2'];
  }],
  ['two sources, the split point inside the second', () => {
    create(['-f', 'qcow2', 'split-a.qcow2', '100M']);
    qemuIo(join(dir, 'split-a.qcow2'), ['write -P 5 99M 1M']);
    create(['-f', 'qcow2', 'split-b.qcow2', '200M']);
    qemuIo(join(dir, 'split-b.qcow2'), ['write -P 6 0 1M', 'write -P 7 59M 2M', 'write -P 8 199M 1M']);
    return ['split-a.qcow2', 'split-b.qcow2'];
  }],
];

function snapshotImage(flag: string, value: string): string[] {
  const path = join(dir, 'snap.qcow2');
  if (!existsSync(path)) {
    create(['-f', 'qcow2', 'snap.qcow2', '8M']);
    qemuIo(path, ['write -P 1 0 1M', 'write -P 2 4M 64k']);
    qemu(['snapshot', '-c', 'first', path]);
    qemuIo(path, ['write -P 3 512k 1M', 'write -z 4M 64k']);
    qemu(['snapshot', '-c', 'second', path]);
    qemuIo(path, ['write -P 4 0 2M']);
  }
  return [flag, value, 'snap.qcow2'];
}

// Long tier only: cases whose reader and options a short-tier case takes too. Raw mixed content
// (-S 64k reads such a file), 2 MiB clusters (other cluster sizes than 512 take the default's path),
// snapshot.name= alone (parsed as snapshot.id=,snapshot.name= is), twoGbMaxExtentFlat (its
// descriptor read as twoGbMaxExtentSparse's, its extents as monolithicFlat's), -t writethrough
// (flushed at the end as the default -t is), and two sources split across guests
// (parallel.test.ts's "two sources: the weighed boundary falls inside the second one").
const LONG_ONLY = new Set(['raw mixed content', 'qcow2 2 MiB clusters', 'qcow2 snapshot.name= only', 'vmdk twoGbMaxExtentFlat', '-t writethrough -T off', 'two sources, the split point inside the second']);
for (const [name, build] of tiered(cases, ([name]) => !LONG_ONLY.has(name))) {
  test(`convert -O raw: ${name}`, () => {
    const args = build();
    const { instar, oracles } = convertBoth(dir, args);
    for (const [v, o] of Object.entries(oracles)) assert.equal(o.result.status, 0, `oracle ${v}: ${o.result.stderr}`);
    assert.equal(instar.result.stderr, '');
    assert.equal(instar.result.status, 0);
    assert.equal(instar.hash, oracles['10.0'].hash, 'bytes differ from qemu-img 10.0');
    assert.equal(instar.hash, oracles['7.2'].hash, 'bytes differ from qemu-img 7.2');
    assert.equal(instar.size, oracles['10.0'].size);
    const theirs = Math.max(oracles['10.0'].blocks!, oracles['7.2'].blocks!);
    assert.ok(instar.blocks! <= theirs + BLOCK_SLACK, `not sparse: ${instar.blocks} blocks vs qemu's ${theirs}`);
  });
}
