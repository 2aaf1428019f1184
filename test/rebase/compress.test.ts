// rebase -c (qemu 8.2+: the copied clusters compressed), differential against qemu-img 10.0.
// Where each of qemu's write requests is one cluster its layout is deterministic and the files
// must be byte-identical (zlib and zstd tops, a cluster that does not shrink, a partial last
// cluster, refcount_bits=1, a version 2 top, a persistent bitmap, an internal snapshot); where a request spans clusters qemu compresses
// them in parallel and packs them in the order they finish, so the content and `check` output
// are compared instead. Formats without compression fail as qemu's do; 7.2 has no -c at all.
// Every write prefix of a compressed copy leaves a top qemu-img checks (leaks at most).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { VERSIONS, runQemu } from '../helpers/oracles.ts';
import { TwinDirs, assertSameOutcome, safeRebaseInDir } from './harness.ts';
import { ImageBuilder } from '../commit/harness.ts';

const builder = new ImageBuilder();
const twins = new TwinDirs();
const chains: Record<string, Record<string, Uint8Array>> = {};
const OVER_OLD = ['-f', 'qcow2', '-b', 'old.qcow2', '-F', 'qcow2'];
const OLD_DATA = ['write -P 1 0 64k', 'write -P 2 1M 4k', 'write -P 4 2M 64k'];

/** Bytes no compressor shrinks (a fixed xorshift stream, so that the test is repeatable). */
function noise(length: number): Buffer {
  const out = Buffer.alloc(length);
  let x = 0x9e3779b9;
  for (let i = 0; i < length; i += 4) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    out.writeUInt32LE(x, i);
  }
  return out;
}

before(() => {
  // One-cluster requests: old and new differ in clusters apart from each other.
  chains.zlib = builder.chain([
    { name: 'old.qcow2', create: ['-f', 'qcow2'], writes: [...OLD_DATA, 'write -P 3 3M 64k'] },
    { name: 'new.qcow2', create: ['-f', 'qcow2'], writes: ['write -P 2 1M 4k'] },
    { name: 't.qcow2', create: OVER_OLD, writes: ['write -P 5 3M 64k'] },
    { name: 'z.qcow2', create: ['-o', 'compression_type=zstd', ...OVER_OLD] },
    { name: 'r1.qcow2', create: ['-o', 'refcount_bits=1', ...OVER_OLD] },
    { name: 'v2.qcow2', create: ['-o', 'compat=0.10', ...OVER_OLD] },
    { name: 'e.qed', create: ['-f', 'qed', '-b', 'old.qcow2', '-F', 'qcow2'], format: 'qed' },
    { name: 'r.raw', create: ['-f', 'raw'], format: 'raw' },
  ]);
  // The disk's last cluster partly inside it (5 MiB + 512), compressed zero-padded.
  chains.tail = builder.chain([
    { name: 'old.qcow2', create: ['-f', 'qcow2'], size: '6M', writes: ['write -P 1 0 6M'] },
    { name: 'new.qcow2', create: ['-f', 'qcow2'], size: '6M', writes: ['write -P 1 0 5M'] },
    { name: 't.qcow2', create: OVER_OLD, size: '5243392' },
  ]);
  // Requests of several clusters (qemu's packing order varies), 4 KiB clusters.
  chains.runs = builder.chain([
    { name: 'old.qcow2', create: ['-f', 'qcow2'], size: '8M', writes: ['write -P 1 0 8M'] },
    { name: 'new.qcow2', create: ['-f', 'qcow2'], size: '8M', writes: ['write -P 1 0 1M', 'write -P 1 4M 4k'] },
    { name: 't.qcow2', create: ['-o', 'cluster_size=4096', ...OVER_OLD], size: '8M', writes: ['write -P 9 6M 4k'] },
  ]);
  // A cluster of noise in the old backing file: it does not shrink and is written as it is.
  const dir = join(builder.root, 'noise');
  mkdirSync(dir);
  const raw = Buffer.alloc(4 * 1024 * 1024);
  raw.fill(1, 0, 65536);
  noise(65536).copy(raw, 3 * 1024 * 1024);
  writeFileSync(join(dir, 'old.raw'), raw);
  assert.equal(runQemu('7.2', ['convert', '-f', 'raw', '-O', 'qcow2', 'old.raw', 'old.qcow2'], { cwd: dir }).status, 0);
  assert.equal(runQemu('7.2', ['create', '-q', ...OVER_OLD, 't.qcow2', '4M'], { cwd: dir }).status, 0);
  chains.noise = { 'old.qcow2': readFileSync(join(dir, 'old.qcow2')), 't.qcow2': readFileSync(join(dir, 't.qcow2')) };
  // Tops with a persistent bitmap (recording the compressed writes) and with an internal snapshot.
  const more = join(builder.root, 'more');
  mkdirSync(more);
  for (const [name, bytes] of Object.entries(chains.zlib)) writeFileSync(join(more, name), bytes);
  assert.equal(runQemu('7.2', ['bitmap', '--add', 'z.qcow2', 'b0'], { cwd: more }).status, 0);
  assert.equal(runQemu('7.2', ['snapshot', '-c', 's1', 't.qcow2'], { cwd: more }).status, 0);
  chains.more = { 'old.qcow2': chains.zlib['old.qcow2'], 'z.qcow2': readFileSync(join(more, 'z.qcow2')), 't.qcow2': readFileSync(join(more, 't.qcow2')) };
});
after(() => {
  builder.remove();
  twins.remove();
});

/** [chain, arguments, byte-identical top expected, through the real sandbox]. */
const CASES: [string, string[], boolean, boolean?][] = [
  ['zlib', ['-c', '-p', '-b', 'new.qcow2', '-F', 'qcow2', 't.qcow2'], true, true],
  ['zlib', ['-c', '-b', '', 'z.qcow2'], true],
  ['zlib', ['-c', '-b', '', 'r1.qcow2'], true],
  ['zlib', ['-c', '-b', 'new.qcow2', '-F', 'qcow2', 'v2.qcow2'], true],
  ['tail', ['-c', '-b', 'new.qcow2', '-F', 'qcow2', 't.qcow2'], true],
  ['noise', ['-c', '-p', '-b', '', 't.qcow2'], true],
  ['more', ['-c', '-b', '', 'z.qcow2'], true],
  ['more', ['-c', '-b', '', 't.qcow2'], true],
  ['runs', ['-c', '-p', '-b', 'new.qcow2', '-F', 'qcow2', 't.qcow2'], false],
];

test('rebase -c matches qemu-img 10.0: the same files where its layout is deterministic, else the same disk and check', () => {
  for (const [chain, args, identical, sandboxed] of CASES) {
    const top = args[args.length - 1];
    const label = `${chain}: rebase ${args.join(' ')}`;
    const r = twins.run('10.0', chains[chain], ['rebase', ...args], { sandboxed });
    const others = Object.keys(chains[chain]).filter((f) => identical || f !== top);
    assertSameOutcome(r, others, label);
    assert.equal(r.qemu.status, 0, `${label}: ${r.qemu.stderr}`);
    const q = join(r.qemuDir, top);
    const i = join(r.instarDir, top);
    assert.ok(!readFileSync(q).equals(chains[chain][top]), `${label}: qemu-img copied something`);
    const map = runQemu('10.0', ['map', '--output=json', i]).stdout;
    assert.match(map, /"compressed": true/, `${label}: instar compressed nothing`);
    if (identical) continue;
    assert.equal(runQemu('10.0', ['compare', q, i]).stdout, 'Images are identical.\n', label);
    assert.equal(runQemu('10.0', ['check', i]).stdout, runQemu('10.0', ['check', q]).stdout, `${label}: check`);
  }
});

for (const version of VERSIONS) {
  test(`rebase -c on formats that cannot compress, and under ${version}: qemu-img's words`, () => {
    for (const args of [
      ['-c', '-p', '-b', 'new.qcow2', '-F', 'qcow2', 'e.qed'],
      ['-c', '-u', '-b', 'new.qcow2', '-F', 'qcow2', 'e.qed'],
      // The check comes before -F's name is looked at.
      ['-c', '-b', 'new.qcow2', '-F', 'nonsense', 'e.qed'],
      ['-c', '-f', 'raw', '-b', '', 'r.raw'],
      ['-c', '-b', 'new.qcow2', '-F', 'qcow2', 't.qcow2'],
    ]) {
      if (version === '10.0' && args.at(-1) === 't.qcow2') continue;
      const r = twins.run(version, chains.zlib, ['rebase', ...args]);
      assertSameOutcome(r, Object.keys(chains.zlib), `${version}: rebase ${args.join(' ')}`);
      assert.equal(r.qemu.status, 1);
      assert.match(r.qemu.stderr, version === '7.2' ? /unrecognized option '-c'/ : /Compression not supported for this file format/);
    }
  });
}

test('rebase -c stopped after every write: the top only leaks and reads as before', () => {
  const files = chains.zlib;
  const names = { top: 't.qcow2', format: 'qcow2', newBacking: 'new.qcow2', compress: true };
  const original = join(builder.root, 'compress-orig');
  mkdirSync(original);
  for (const [name, bytes] of Object.entries(files)) writeFileSync(join(original, name), bytes);
  const done = join(builder.root, 'compress-done');
  assert.equal((safeRebaseInDir(done, files, Infinity, names) as { done?: boolean }).done, true);
  const final = readFileSync(join(done, 't.qcow2'));
  let k = 0;
  for (; k < 40; k++) {
    const dir = join(builder.root, `compress-crash${k}`);
    safeRebaseInDir(dir, files, k, names);
    const top = join(dir, 't.qcow2');
    const check = runQemu('10.0', ['check', top]);
    assert.ok(check.status === 0 || check.status === 3, `after ${k} writes: ${check.stdout}${check.stderr}`);
    assert.equal(runQemu('10.0', ['compare', '-q', join(original, 't.qcow2'), top]).status, 0, `after ${k} writes the top reads differently`);
    if (readFileSync(top).equals(final)) break;
  }
  assert.ok(k >= 4 && k < 40, `${k} writes`);
});
