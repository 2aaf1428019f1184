// convert where sizes are not whole 512-byte sectors. qemu counts in sectors: a raw source of
// 1000000 bytes is a disk of 1954 sectors (1000448 bytes); -n accepts a target whose size rounds
// up to at least the disk's sectors (so a target a few bytes short is fine) and refuses one a
// whole sector short; a block-status run ending inside a sector is taken to that sector's end, so
// the data before a file's end is copied with the zeros after it (extending a shorter target, which
// zero runs, as holes, never do). Progress chunks follow qemu's runs: up to 2 MiB each, and a run
// that passes a source cluster boundary ends at the last boundary it passes.
import { after, before, describe, test } from 'node:test';
import { tiered } from '../helpers/long.ts';
import { closeSync, ftruncateSync, openSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { prng, qemu, qemuIo, tempDir } from './helpers.ts';
import { assertSameConvert } from './edge-compare.ts';

const { dir, cleanup } = tempDir();
const at = (name: string) => join(dir, name);

function randomBytes(size: number, seed: number): Buffer {
  const next = prng(seed);
  const buf = Buffer.alloc(size);
  for (let i = 0; i < size; i++) buf[i] = next() & 0xff;
  return buf;
}

/** A target of `size` bytes: all 0xa5 (junk the copy must overwrite) or all hole. */
const junk = (size: number) => (target: string) => writeFileSync(target, Buffer.alloc(size, 0xa5));
const hole = (size: number) => (target: string) => {
  const fd = openSync(target, 'w');
  ftruncateSync(fd, size);
  closeSync(fd);
};

before(() => {
  // 1954 sectors, the last one 64 bytes of data: all data, ending inside a sector.
  writeFileSync(at('odd.raw'), randomBytes(1_000_000, 1));
  // Data, then written zeros to an odd end.
  writeFileSync(at('oddz.raw'), Buffer.concat([randomBytes(500_000, 2), Buffer.alloc(500_000)]));
  // Data in its first 64 KiB, a hole to an odd end.
  writeFileSync(at('oddhole.raw'), randomBytes(65536, 3));
  hole(1_000_001)(at('oddhole.raw'));
  // A qcow2 over the odd raw file: the backing data ends inside the overlay's last cluster.
  qemu(['create', '-q', '-f', 'qcow2', '-b', 'odd.raw', '-F', 'raw', at('over-odd.qcow2'), '1M']);
  qemuIo(at('over-odd.qcow2'), ['write -P 7 64k 4k']);
  // 512-byte clusters: runs of a few KiB, not multiples of 4 KiB.
  qemu(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512', at('c512.qcow2'), '1M']);
  qemuIo(at('c512.qcow2'), ['write -P 3 0 5120', 'write -P 4 65536 9728']);
  // Whole-disk data in a qcow2 whose size is not a whole number of clusters; VHD and VDI blocks.
  qemu(['create', '-q', '-f', 'qcow2', at('odd-size.qcow2'), '1000448']);
  qemuIo(at('odd-size.qcow2'), ['write -P 9 0 1000448']);
  qemu(['create', '-q', '-f', 'vpc', '-o', 'subformat=dynamic', at('blocks.vhd'), '5M']);
  qemuIo(at('blocks.vhd'), ['write -P 9 1M 3M'], 'vpc');
  qemu(['create', '-q', '-f', 'vdi', at('blocks.vdi'), '5M']);
  qemuIo(at('blocks.vdi'), ['write -P 9 100k 3M'], 'vdi');
  // A data run of 3 MiB starting at 4 KiB, in a sparse raw file of 8 MiB.
  hole(8 * 1024 * 1024)(at('shifted.raw'));
  const fd = openSync(at('shifted.raw'), 'r+');
  writeSync(fd, randomBytes(3 * 1024 * 1024, 4), 0, 3 * 1024 * 1024, 4096);
  closeSync(fd);
});
after(cleanup);

const RAW = ['-f', 'raw', '-O', 'raw'];

describe('-n into a target whose size is not whole sectors', () => {
  // 1000448 bytes is the disk; 999999 and 1000000 round up to it; 999936 is a sector short.
  // The short tier takes a sector short, rounded up, exact and longer; the long tier every size.
  for (const size of tiered([999_936, 999_999, 1_000_000, 1_000_448, 1_000_500, 2_000_000], (n) => n !== 1_000_000 && n !== 1_000_500)) {
    for (const [kind, prepare] of [['junk', junk(size)], ['hole', hole(size)]] as const) {
      test(`odd.raw into ${size} bytes of ${kind}`, () => assertSameConvert({ dir, args: ['-n', ...RAW, { source: 'odd.raw' }], prepare }));
    }
    test(`oddz.raw (zeros to the end) into ${size} bytes of junk`, () => assertSameConvert({ dir, args: ['-n', ...RAW, { source: 'oddz.raw' }], prepare: junk(size) }));
  }
  // 1000000 rounds up to the disk's sectors as 999999 does: the short tier takes 999999, the long tier both.
  for (const size of tiered([999_999, 1_000_000], (n) => n === 999_999)) {
    test(`-p odd.raw into ${size} bytes`, () => assertSameConvert({ dir, args: ['-n', '-p', ...RAW, { source: 'odd.raw' }], prepare: junk(size) }));
    test(`-S 0 oddz.raw into ${size} bytes (zeros are written, and extend it)`, () => assertSameConvert({ dir, args: ['-n', '-S', '0', ...RAW, { source: 'oddz.raw' }], prepare: hole(size) }));
    test(`--target-is-zero oddhole.raw into ${size} bytes`, () => assertSameConvert({ dir, args: ['-n', '--target-is-zero', ...RAW, { source: 'oddhole.raw' }], prepare: hole(size) }));
    test(`oddhole.raw into ${size} bytes of junk`, () => assertSameConvert({ dir, args: ['-n', ...RAW, { source: 'oddhole.raw' }], prepare: junk(size) }));
  }
  test('-p a sector short: qemu refuses', () => assertSameConvert({ dir, args: ['-n', '-p', ...RAW, { source: 'odd.raw' }], prepare: junk(999_936) }));
  // Two odd sources: 1954 + 1954 sectors; a target one byte short of that still takes them.
  test('two odd sources into a target one byte short', () => assertSameConvert({ dir, args: ['-n', ...RAW, { source: 'odd.raw' }, { source: 'oddz.raw' }], prepare: junk(2_000_895) }));
  test('two odd sources into a target a sector short', () => assertSameConvert({ dir, args: ['-n', ...RAW, { source: 'odd.raw' }, { source: 'oddz.raw' }], prepare: junk(2_000_384) }));
  test('a qcow2 over an odd backing file into a target a few bytes short', () => assertSameConvert({ dir, args: ['-n', '-p', { source: 'over-odd.qcow2' }], prepare: junk(1_048_000) }));
  test('a qcow2 over an odd backing file into a target a sector short', () => assertSameConvert({ dir, args: ['-n', '-p', { source: 'over-odd.qcow2' }], prepare: junk(1_048_064) }));
});

describe('progress chunks at odd boundaries (new target)', () => {
  test('-p odd.raw', () => assertSameConvert({ dir, args: ['-p', ...RAW, { source: 'odd.raw' }] }));
  test('-p two odd sources', () => assertSameConvert({ dir, args: ['-p', ...RAW, { source: 'odd.raw' }, { source: 'oddz.raw' }, { source: 'odd.raw' }] }));
  test('-p a qcow2 over an odd backing file (runs end at cluster boundaries)', () => assertSameConvert({ dir, args: ['-p', { source: 'over-odd.qcow2' }] }));
  test('-p 512-byte clusters (short runs are one chunk each)', () => assertSameConvert({ dir, args: ['-p', { source: 'c512.qcow2' }] }));
  for (const image of ['odd-size.qcow2', 'blocks.vhd', 'blocks.vdi']) {
    test(`-p ${image} (runs end at the last cluster or block boundary they pass)`, () => assertSameConvert({ dir, args: ['-p', { source: image }] }));
  }
  // The random run has no zeros for -S 4k or -S 64k to find: the same unaligned chunks; -S 64k in the long tier only.
  for (const sparse of tiered(['4k', '64k'], (s) => s === '4k')) {
    test(`-p -S ${sparse}, a 3 MiB run from 4 KiB (chunks of 2 MiB, not aligned)`, () => assertSameConvert({ dir, args: ['-p', '-S', sparse, ...RAW, { source: 'shifted.raw' }] }));
  }
});
