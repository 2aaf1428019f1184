// The VHD writer against qemu-img convert -O vpc (7.2 and 10.0): instar's file (create's layout
// then the writer, in-process) equals qemu's once the footers' timestamp, UUID and the checksum
// over them are masked (the checksum itself is verified first), with data and holes in the same
// places; `info` (disk size masked: see dataMap), `check` and `compare src out` print the same
// for both files. Sources: raw files with holes, zeros and data, a
// qcow2 over a backing file, an empty disk, sizes that are not whole blocks, a disk whose BAT
// takes more than one sector.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VERSIONS } from '../helpers/oracles.ts';
import { dataMap, maskActualSize, chainFiles, firstDifference, holesFile, maskVhd, MiB, noise, openWriterOn, rawFile, read, sameOutput, writeWithInstar, writeWithQemu } from './vpc-vmdk-harness.ts';

let dir = '';
const at = (name: string) => join(dir, name);

/** Source name → [file qemu converts, raw file of its guest data instar writes from]. */
const sources = new Map<string, [string, string]>();
/** Where a large source may hold data (the rest is holes the harness need not read). */
const ranges = new Map<string, [number, number][]>();

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'instar-writer-vpc-'));
  const holes = holesFile(at('holes.raw'));
  sources.set('holes', [holes, holes]);
  const empty = rawFile(at('empty.raw'), 5 * MiB, []);
  sources.set('empty', [empty, empty]);
  const nothing = rawFile(at('zero-size.raw'), 0, []);
  sources.set('zero-size', [nothing, nothing]);
  // 300 MiB: 150 BAT entries, more than one sector of them.
  const writes: [number, Buffer][] = [[MiB, noise(5, 5000)], [150 * MiB + 77, noise(6, 3000)], [300 * MiB - 4096, noise(7, 4096)]];
  const big = rawFile(at('big.raw'), 300 * MiB, writes);
  sources.set('big', [big, big]);
  ranges.set('big', writes.map(([pos, b]) => [pos, pos + b.length]));
  sources.set('chain', chainFiles(dir));
});
after(() => rmSync(dir, { recursive: true, force: true }));

const CASES: [string, string][] = [
  ['holes', ''], ['holes', 'subformat=fixed'], ['holes', 'force_size=on'], ['holes', 'subformat=fixed,force_size=on'],
  ['empty', ''], ['empty', 'subformat=fixed'], ['zero-size', ''],
  ['big', 'subformat=dynamic'], ['chain', ''], ['chain', 'subformat=fixed,force_size=on'],
];

test('convert -O vpc: instar\'s writer gives qemu\'s file (masked), info, check and compare (7.2 and 10.0)', () => {
  const problems: string[] = [];
  CASES.forEach(([source, options], n) => {
    const [qemuSrc, rawSrc] = sources.get(source)!;
    const mine = at(`i${n}.vhd`);
    writeWithInstar('vpc', options, rawSrc, mine, undefined, ranges.get(source));
    for (const version of VERSIONS) {
      const label = `${source} -o '${options}' vs ${version}`;
      const theirs = at(`q${n}-${version}.vhd`);
      writeWithQemu(version, 'vpc', options, qemuSrc, theirs);
      problems.push(...firstDifference(maskVhd(read(mine), `instar ${label}`), maskVhd(read(theirs), `qemu ${label}`), label));
      if (dataMap(mine) !== dataMap(theirs)) problems.push(`${label}: instar's file has data at ${dataMap(mine)}, qemu's at ${dataMap(theirs)}`);
      problems.push(...sameOutput(version, (f) => ['info', '--output=json', '-f', 'vpc', f], mine, theirs, label, maskActualSize));
      problems.push(...sameOutput(version, (f) => ['check', '-f', 'vpc', f], mine, theirs, label));
      problems.push(...sameOutput(version, (f) => ['compare', '-F', 'vpc', qemuSrc, f], mine, theirs, label));
      rmSync(theirs);
    }
    rmSync(mine);
  });
  assert.deepEqual(problems, []);
});

test('vpc writer: a write outside the disk is refused with a one-line ImageError, nothing written', () => {
  const src = join(dir, 'small.raw');
  rawFile(src, MiB, [[0, Buffer.from('abc')]]);
  const out = join(dir, 'refuse.vhd');
  writeWithInstar('vpc', '', src, out);
  const before = read(out);
  for (const options of ['', 'subformat=fixed']) {
    const { writer, fds } = openWriterOn('vpc', options, src, join(dir, `r-${options || 'dyn'}.vhd`));
    try {
      assert.throws(() => writer.write(Buffer.alloc(512, 1), 64 * MiB), { name: 'ImageError', message: /outside the \d+-byte disk/ });
      assert.throws(() => writer.write(Buffer.alloc(512, 1), -512), { name: 'ImageError' });
    } finally {
      fds.forEach((fd) => closeSync(fd));
    }
  }
  assert.deepEqual(read(out), before);
});
