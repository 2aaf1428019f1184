// The VHDX writer against qemu-img convert -O vhdx (7.2 and 10.0), in-process: create's layout,
// then the writer fed the source's guest data in ascending order, skipping zeros. instar's file
// equals qemu's once GUIDs, headers and log checksums are masked (vhdx-harness.ts); its
// allocation, `info`, `check` and `compare src out` are qemu's. Sources: raw files with holes,
// zeros and data (a size that is no whole block), a qcow2 over a backing file, an empty disk, a
// zero-size disk (its BAT is 64 MiB: qemu's uint32 arithmetic wraps), and more allocations than
// the log holds entries (it wraps).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VERSIONS, type OracleVersion } from '../helpers/oracles.ts';
import { LONG, tiered } from '../helpers/long.ts';
import { allocated, chainFiles, firstDifference, holesFile, MiB, noise, rawFile, read, sameOutput, writeWithQemu } from './vpc-vmdk-harness.ts';
import { convertWithInstar, maskVhdx, openWriter } from './vhdx-harness.ts';

let dir = '';
const at = (name: string) => join(dir, name);
const sources = new Map<string, [string, string]>();

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'instar-writer-vhdx-'));
  const holes = holesFile(at('holes.raw'));
  sources.set('holes', [holes, holes]);
  const empty = rawFile(at('empty.raw'), 5 * MiB, []);
  sources.set('empty', [empty, empty]);
  const nothing = rawFile(at('zero-size.raw'), 0, []);
  sources.set('zero-size', [nothing, nothing]);
  // 140 blocks of 1 MiB with data: 140 log entries in a 1 MiB log of 128 (long tier).
  const many = rawFile(at('many.raw'), 140 * MiB + 512, Array.from({ length: 140 }, (_, i): [number, Buffer] => [i * MiB + 8192, noise(i, 100)]));
  sources.set('many', [many, many]);
  sources.set('chain', chainFiles(dir));
});
after(() => rmSync(dir, { recursive: true, force: true }));

const BOTH = VERSIONS;
/** One version in the short tier (the CLI test takes the other), both in the long one. */
const ONE_OR_BOTH = (v: OracleVersion): readonly OracleVersion[] => (LONG ? VERSIONS : [v]);
/**
 * [source, options, versions, in the short tier]: the long tier repeats short cases in kind, or
 * costs seconds (qemu fsyncs at every allocation). The versions differ only in the creator string.
 */
const CASES = tiered<[string, string, readonly OracleVersion[], boolean]>([
  ['holes', '', ONE_OR_BOTH('7.2'), true], ['holes', 'subformat=fixed', ['10.0'], true], ['holes', 'subformat=fixed,block_state_zero=off', BOTH, false],
  ['holes', 'block_state_zero=off', ['7.2'], true], ['holes', 'block_size=1048576,log_size=2097152', BOTH, false], ['empty', '', ['10.0'], true],
  ['empty', 'subformat=fixed,block_state_zero=off', BOTH, false], ['zero-size', '', ['7.2'], false], ['many', 'block_size=1048576', BOTH, false],
  ['chain', '', ONE_OR_BOTH('10.0'), true], ['chain', 'subformat=fixed,block_size=2097152', BOTH, false],
], (c) => c[3]);

test('convert -O vhdx: instar\'s writer gives qemu\'s file (masked), allocation, info, check and compare (7.2 and 10.0)', () => {
  const problems: string[] = [];
  CASES.forEach(([source, options, versions], n) => {
    const [qemuSrc, rawSrc] = sources.get(source)!;
    for (const version of versions) {
      const mine = at(`i${n}-${version}.vhdx`);
      convertWithInstar('vhdx', options, rawSrc, mine, version);
      const label = `${source} -o '${options}' vs ${version}`;
      const theirs = at(`q${n}-${version}.vhdx`);
      writeWithQemu(version, 'vhdx', options, qemuSrc, theirs);
      problems.push(...firstDifference(maskVhdx(read(mine), `instar ${label}`), maskVhdx(read(theirs), `qemu ${label}`), label));
      if (allocated(mine) !== allocated(theirs)) problems.push(`${label}: instar's file has ${allocated(mine)} bytes allocated, qemu's ${allocated(theirs)}`);
      problems.push(...sameOutput(version, (f) => ['info', '--output=json', '-f', 'vhdx', f], mine, theirs, label));
      problems.push(...sameOutput(version, (f) => ['check', '-f', 'vhdx', f], mine, theirs, label));
      problems.push(...sameOutput(version, (f) => ['compare', '-F', 'vhdx', qemuSrc, f], mine, theirs, label));
      rmSync(theirs);
      rmSync(mine);
    }
  });
  assert.deepEqual(problems, []);
});

test('vhdx writer: a write outside the disk is refused with a one-line ImageError', () => {
  for (const options of ['', 'subformat=fixed,block_state_zero=off']) {
    const { writer, fd } = openWriter('vhdx', options, MiB, at(`r-${options ? 'fixed' : 'dyn'}.vhdx`), '10.0');
    try {
      assert.throws(() => writer.write(Buffer.alloc(512, 1), 64 * MiB), { name: 'ImageError', message: /outside the \d+-byte disk/ });
      assert.throws(() => writer.write(Buffer.alloc(512, 1), -512), { name: 'ImageError' });
    } finally {
      closeSync(fd);
    }
  }
});
