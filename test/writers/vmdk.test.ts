// The VMDK writer against qemu-img convert -O vmdk (7.2 and 10.0), in-process: instar's files
// (create's layout, then the writer) equal qemu's once the descriptor's CID is masked (qemu draws
// a new one on its first write, whose hex length may leave up to 7 bytes of the old line behind
// the text); streamOptimized grains are deflated by node's zlib, not the system's, so there the
// header, descriptor, directories and the set of allocated grains must match instead of the
// bytes. For every case `info` (CID and disk sizes masked), `check` and `compare src out` print
// the same for both files, and the files have data and holes in the same places (except streams).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VERSIONS, type OracleVersion } from '../helpers/oracles.ts';
import { dataMap, maskActualSize, chainFiles, firstDifference, grains, holesFile, maskCid, MiB, noise, openWriterOn, rawFile, read, sameOutput, writeWithInstar, writeWithQemu } from './vpc-vmdk-harness.ts';

const GiB = 1024 * MiB;
let dir = '';
const at = (name: string) => join(dir, name);

/** Source name → [file qemu converts, raw file of its guest data, where that file may hold data]. */
const sources = new Map<string, [string, string, [number, number][] | undefined]>();

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'instar-writer-vmdk-'));
  const holes = holesFile(at('holes.raw'));
  sources.set('holes', [holes, holes, undefined]);
  const empty = rawFile(at('empty.raw'), 5 * MiB, []);
  sources.set('empty', [empty, empty, []]);
  const [top, topRaw] = chainFiles(dir);
  sources.set('chain', [top, topRaw, undefined]);
  // 5 GiB: 160 grain tables, two sectors of grain directory; three 2 GiB extents when split,
  // with a run across the first extent boundary.
  const writes: [number, Buffer][] = [[0, noise(8, 3000)], [2 * GiB - 100, noise(9, 200)], [4 * GiB + 65536 * 3 + 17, noise(10, 70000)], [5 * GiB - 512, noise(11, 512)]];
  const big = rawFile(at('big.raw'), 5 * GiB, writes);
  sources.set('big', [big, big, writes.map(([pos, b]) => [pos, pos + b.length])]);
});
after(() => rmSync(dir, { recursive: true, force: true }));

/** The files of an image (descriptor first, then its extents), by the name stem they share. */
const filesOf = (stem: string) => readdirSync(dir).filter((f) => f.startsWith(`${stem}.`) || f.startsWith(`${stem}-`)).sort((a, b) => a.length - b.length || a.localeCompare(b));

/** [source, options, versions]: option variants against one oracle each (the layout is the same in both). */
const CASES: [string, string, OracleVersion[]?][] = [
  ['holes', ''], ['holes', 'subformat=monolithicFlat'], ['holes', 'subformat=twoGbMaxExtentSparse'], ['holes', 'subformat=twoGbMaxExtentFlat'],
  ['holes', 'subformat=streamOptimized'], ['holes', 'compat6=on', ['7.2']], ['holes', 'hwversion=7,adapter_type=lsilogic', ['10.0']], ['holes', 'zeroed_grain=on', ['7.2']],
  ['holes', 'subformat=twoGbMaxExtentSparse,zeroed_grain=on,adapter_type=buslogic', ['10.0']],
  ['empty', ''], ['empty', 'subformat=monolithicFlat', ['7.2']], ['empty', 'subformat=streamOptimized', ['10.0']],
  ['chain', ''], ['chain', 'subformat=streamOptimized'], ['chain', 'subformat=twoGbMaxExtentFlat', ['7.2']],
  ['big', ''], ['big', 'subformat=twoGbMaxExtentSparse'], ['big', 'subformat=streamOptimized', ['10.0']],
];

test('convert -O vmdk: instar\'s writer gives qemu\'s files (CID masked), info, check and compare (7.2 and 10.0)', () => {
  const problems: string[] = [];
  CASES.forEach(([source, options, versions = [...VERSIONS]], n) => {
    const [qemuSrc, rawSrc, ranges] = sources.get(source)!;
    const stream = options.includes('streamOptimized');
    const mine = `i${n}m`;
    writeWithInstar('vmdk', options, rawSrc, at(`${mine}.vmdk`), undefined, ranges);
    for (const version of versions) {
      const label = `${source} -o '${options}' vs ${version}`;
      // Names as long as instar's: the descriptors name their extents by them.
      const theirs = `q${n}${version === '7.2' ? 'a' : 'b'}`;
      writeWithQemu(version, 'vmdk', options, qemuSrc, at(`${theirs}.vmdk`));
      const [a, b] = [filesOf(mine), filesOf(theirs)];
      assert.equal(a.length, b.length, `${label}: instar wrote ${a.join(' ')}, qemu ${b.join(' ')}`);
      a.forEach((name, i) => {
        const [x, y] = [maskCid(read(at(name)), mine), maskCid(read(at(b[i])), theirs)];
        if (!stream) {
          problems.push(...firstDifference(x, y, `${label} ${name}`));
          // A descriptor file is as long as its CID's hex digits make it: its masked bytes compared above.
          if (!(a.length > 1 && i === 0) && dataMap(at(name)) !== dataMap(at(b[i]))) problems.push(`${label}: ${name} has data at ${dataMap(at(name))}, qemu's at ${dataMap(at(b[i]))}`);
          return;
        }
        // The header, descriptor and both grain directories with their tables' places come from create.
        const tablesEnd = Number(y.readBigUInt64LE(64)) * 512;
        problems.push(...firstDifference(x.subarray(0, 21 * 512), y.subarray(0, 21 * 512), `${label} ${name} header and descriptor`));
        assert.deepEqual(grains(x, `instar ${label}`), grains(y, `qemu ${label}`), `${label}: allocated grains`);
        if (x.length < tablesEnd) problems.push(`${label}: instar's stream is shorter than its tables`);
      });
      const normalize = (t: string) => maskActualSize(t.replace(/"cid": \d+/g, '"cid": 0'));
      const file = (stem: string) => at(`${stem}.vmdk`);
      problems.push(...sameOutput(version, (f) => ['info', '--output=json', '-f', 'vmdk', f], file(mine), file(theirs), label, normalize));
      problems.push(...sameOutput(version, (f) => ['check', '-f', 'vmdk', f], file(mine), file(theirs), label));
      problems.push(...sameOutput(version, (f) => ['compare', '-F', 'vmdk', qemuSrc, f], file(mine), file(theirs), label));
      for (const f of b) rmSync(at(f));
    }
    for (const f of filesOf(mine)) rmSync(at(f));
  });
  assert.deepEqual(problems, []);
});

test('vmdk writer: a write outside the disk is refused with a one-line ImageError', () => {
  const src = rawFile(at('small.raw'), MiB, [[0, Buffer.from('abc')]]);
  for (const options of ['', 'subformat=monolithicFlat', 'subformat=streamOptimized']) {
    const { writer, fds } = openWriterOn('vmdk', options, src, at('refused.vmdk'));
    try {
      assert.throws(() => writer.write(Buffer.alloc(512, 1), 64 * MiB), { name: 'ImageError', message: /outside the \d+-byte disk/ });
      assert.throws(() => writer.write(Buffer.alloc(512, 1), -512), { name: 'ImageError' });
    } finally {
      fds.forEach((fd) => closeSync(fd));
    }
  }
});
