// create -f raw / -f file: not only the bytes but which blocks are allocated must be qemu's,
// since qemu-img map (and convert's sparseness) shows them: qemu writes the first block of an
// empty or falloc'd file (allocate_first_block), falloc reserves unwritten extents (holes to
// SEEK_DATA) and full writes every byte. Each file is compared by its bytes and by the map qemu
// prints of it.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { ImageDir } from '../differential/harness.ts';
import { VERSIONS, runInstar, runQemu } from '../helpers/oracles.ts';
import { tiered } from '../helpers/long.ts';

const dir = new ImageDir('create-raw-alloc');
after(() => dir.remove());

const map = (name: string) => runQemu('7.2', ['map', '--output=json', '-f', 'raw', dir.path(name)]).stdout;

const MODES = ['off', 'falloc', 'full'];
const SIZES = ['1000', '4M'];
const RAW_CASES = VERSIONS.flatMap((version) => ['raw', 'file'].flatMap((format) => MODES.flatMap((prealloc) =>
  SIZES.map((size) => ({ version, format, prealloc, size })))));
// Short tier: every mode at each size once, -f raw (on 7.2) and -f file (the same create under the
// protocol's name, on 10.0) taking turns; 7.2 and 10.0 lay these files out alike. Long tier: all 24.
const RAW_RUNS = tiered(RAW_CASES, ({ version, format, prealloc, size }) =>
  version === (format === 'raw' ? '7.2' : '10.0') && (MODES.indexOf(prealloc) + SIZES.indexOf(size) + (format === 'file' ? 1 : 0)) % 2 === 0);

test('raw and file images as qemu lays them out: every preallocation mode, small and sector-odd sizes', () => {
  for (const { version, format, prealloc, size } of RAW_RUNS) {
    const label = `${version} -f ${format} -o preallocation=${prealloc} ${size}`;
    const args = ['create', '-q', '-f', format, '-o', `preallocation=${prealloc}`];
    const q = `q-${version}-${format}-${prealloc}-${size}`;
    const i = `i-${version}-${format}-${prealloc}-${size}`;
    assert.equal(runQemu(version, [...args, q, size], { cwd: dir.dir }).status, 0, label);
    const r = runInstar([...args, i, size, '--qemu-version', version], { cwd: dir.dir });
    assert.equal(r.status, 0, `${label}: ${r.stderr}`);
    assert.ok(readFileSync(dir.path(i)).equals(readFileSync(dir.path(q))), `${label}: bytes`);
    assert.equal(map(i), map(q), `${label}: allocation`);
  }
});

test('luks preallocation=falloc reserves the payload as qemu does (the file seen as raw)', () => {
  const secret = ['--object', 'secret,id=s,data=x', '-o', 'key-secret=s,iter-time=10,preallocation=falloc'];
  for (const version of VERSIONS) {
    const q = `q-${version}.luks`;
    const i = `i-${version}.luks`;
    dir.qemu(['create', '-q', '-f', 'luks', ...secret, q, '4M'], { version, retries: 5 });
    const r = runInstar(['create', '-q', '-f', 'luks', ...secret, i, '4M', '--qemu-version', version], { cwd: dir.dir });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(map(i), map(q), `${version}: allocation`);
  }
});

test('qcow2 preallocation=falloc|full: the L1 cluster\'s tail past the table stays a hole, as qemu leaves it', () => {
  // qemu preallocates from where its create left the file (the L1 table's cluster end): only its
  // writes allocate before that. Cluster sizes where the L1 table leaves a tail (64k, 2M) or not (4k).
  const cases = [['falloc', '64k', '4M'], ['full', '64k', '4M'], ['falloc', '2M', '64M'], ['falloc', '4k', '64M']];
  // Short tier: each shape once, the versions taking turns (they lay these out alike; each checks two); long tier: both each.
  const runs = tiered(VERSIONS.flatMap((version) => cases.map((c, k) => ({ version, c, k }))), ({ version, k }) => VERSIONS[k % 2] === version);
  for (const { version, c: [prealloc, clusterSize, size] } of runs) {
    const label = `${version} qcow2 preallocation=${prealloc} cluster_size=${clusterSize} ${size}`;
    const args = ['create', '-q', '-f', 'qcow2', '-o', `preallocation=${prealloc},cluster_size=${clusterSize}`];
    const q = `q-${version}-${prealloc}-${clusterSize}.qcow2`;
    const i = `i-${version}-${prealloc}-${clusterSize}.qcow2`;
    assert.equal(runQemu(version, [...args, q, size], { cwd: dir.dir }).status, 0, label);
    const r = runInstar([...args, i, size, '--qemu-version', version], { cwd: dir.dir });
    assert.equal(r.status, 0, `${label}: ${r.stderr}`);
    assert.ok(readFileSync(dir.path(i)).equals(readFileSync(dir.path(q))), `${label}: bytes`);
    assert.equal(map(i), map(q), `${label}: allocation`);
  }
});
