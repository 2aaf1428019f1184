// Images that open but whose size qemu cannot tell: a parallels header's 64-bit sector count is
// qemu's total_sectors as is. When its byte size wraps in 64 bits to at most BDRV_MAX_LENGTH the
// open succeeds, and every size query fails afterwards (EFBIG, or for a negative count that count
// negated and narrowed to a C int, which strerror words "Unknown error -8192" or even "Success").
// Each command words that failure itself; instar must print the same for both qemu versions.
// Also here: dmg-like sums in vmdk descriptors, and compare on parallels disks of 1 TiB and more,
// where qemu's block status truncates its length to a C int of sectors.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ImageDir, SANDBOXED, assertSameOutput } from './harness.ts';
import { INSTAR_ALIAS, VERSIONS, runQemu } from '../helpers/oracles.ts';
import { spawnSync } from 'node:child_process';

const images = new ImageDir('size-query');

/** Sector counts (as the header holds them) that open in qemu but fail its size queries. */
const FAILING: [string, bigint][] = [
  // 2^55 + 8192 sectors: 2^64 + 4 MiB bytes, wraps to 4 MiB; bdrv_getlength: EFBIG.
  ['efbig', 2n ** 55n + 0x2000n],
  // Wraps to a 0-byte size exactly.
  ['efbig-zero', 2n ** 55n],
  // Negative as int64: -(2^63 - 8192), narrowed to int: -8192.
  ['negative', 2n ** 63n + 0x2000n],
  // Negated and narrowed, 1: EPERM's text.
  ['negative-eperm', 0x8000_0000_ffff_ffffn],
  // Negated and narrowed, 0: info adds no reason, strerror(0) is "Success".
  ['negative-zero', 0x8000_0001_0000_0000n],
];

/** Sector counts whose wrapped byte size passes BDRV_MAX_LENGTH: the open itself fails. */
const REFUSED: [string, bigint][] = [
  ['all-ones', 2n ** 64n - 1n],
  ['just-past-int64', 2n ** 54n + 5n],
];

/** A copy of the good image with another sector count in its header (offset 36, 64-bit LE). */
function withSectors(name: string, sectors: bigint): void {
  const bytes = readFileSync(images.path('good.hds'));
  bytes.writeBigUInt64LE(sectors, 36);
  writeFileSync(images.path(name), bytes);
}

/** A monolithicFlat descriptor with these extent lines. */
function descriptor(extents: string[]): string {
  return ['# Disk DescriptorFile', 'version=1', 'CID=12345678', 'parentCID=ffffffff', 'createType="monolithicFlat"', '', ...extents, '', 'ddb.virtualHWVersion = "4"', ''].join('\n');
}

before(() => {
  images.img('create', '-q', '-f', 'parallels', 'good.hds', '1M');
  images.io('-f', 'parallels', '-c', 'write -P 0x5a 0 64k', 'good.hds');
  images.img('create', '-q', '-f', 'parallels', 'other.hds', '1M');
  for (const [name, sectors] of [...FAILING, ...REFUSED]) withSectors(`${name}.hds`, sectors);
  // Disks of 2^31 sectors and more (1 TiB): qemu's parallels block status truncates its length.
  withSectors('tib-data.hds', 2n ** 31n);
  withSectors('tib-odd-data.hds', 2n ** 32n - 2n ** 24n - 1n);
  withSectors('tib-below.hds', 2n ** 31n - 1n);
  writeFileSync(images.path('tib-empty.hds'), (() => {
    const b = readFileSync(images.path('other.hds'));
    b.writeBigUInt64LE(2n ** 31n, 36);
    return b;
  })());
  images.sparse('empty.raw', 0);
  // vmdk sums its extents' sector counts: flat extents of 2^55 + 8 sectors (EFBIG), one starting
  // past the end of its file (qemu's check still looks at it), and a sum that wraps negative.
  images.sparse('flat.raw', 1024 * 1024);
  writeFileSync(images.path('vmdk-efbig.vmdk'), descriptor([`RW ${2n ** 55n + 8n} FLAT "flat.raw" 0`]));
  writeFileSync(images.path('vmdk-eof.vmdk'), descriptor([`RW ${2n ** 55n + 8n} FLAT "flat.raw" 4096`]));
  writeFileSync(images.path('vmdk-negative.vmdk'), descriptor([`RW ${2n ** 63n - 1n} FLAT "flat.raw" 0`, `RW ${2n ** 63n - 1n} FLAT "flat.raw" 0`, 'RW 8194 FLAT "flat.raw" 0']));
  // A qcow2 image on top of one that fails: the failure comes from the backing file's block status.
  images.img('create', '-q', '-f', 'qcow2', '-u', '-b', 'efbig.hds', '-F', 'parallels', 'top.qcow2', '4M');
  images.io('-c', 'write -P 0x11 1M 64k', 'top.qcow2');
});

after(() => images.remove());

test('the crafted images really carry the sector counts', () => {
  for (const [name, sectors] of [...FAILING, ...REFUSED]) {
    assert.equal(readFileSync(images.path(`${name}.hds`)).readBigUInt64LE(36), sectors, name);
  }
  // And qemu opens the failing ones (their check succeeds) but not the refused ones.
  assert.equal(runQemu('10.0', ['check', '-f', 'parallels', 'efbig.hds'], { cwd: images.dir }).status, 0);
  assert.match(runQemu('10.0', ['info', '-f', 'parallels', 'all-ones.hds'], { cwd: images.dir }).stderr, /Could not refresh total sector count/);
});

const commands = (img: string): string[][] => [
  ['info', '-f', 'parallels', img],
  ['info', '--output=json', '-f', 'parallels', img],
  ['map', '-f', 'parallels', img],
  ['map', '--output=json', '-f', 'parallels', img],
  ['check', '-f', 'parallels', img],
  ['check', '--output=json', '-f', 'parallels', img],
  ['compare', '-f', 'parallels', '-F', 'parallels', img, 'good.hds'],
  ['compare', '-f', 'parallels', '-F', 'parallels', 'good.hds', img],
  ['compare', '-p', '-f', 'parallels', '-F', 'parallels', 'good.hds', img],
  ['compare', '-s', '-f', 'parallels', '-F', 'parallels', img, img],
];

for (const [name] of [...FAILING, ...REFUSED]) {
  describe(`sector count ${name}`, () => {
    for (const args of commands(`${name}.hds`)) test(args.join(' '), async () => await assertSameOutput(images.dir, args));
  });
}

describe('vmdk extents summing past int64 bytes', () => {
  for (const img of ['vmdk-efbig.vmdk', 'vmdk-eof.vmdk', 'vmdk-negative.vmdk']) {
    for (const args of [['info', img], ['map', '--output=json', img], ['check', img], ['compare', img, img], ['compare', '-f', 'parallels', 'good.hds', img]]) {
      test(args.join(' '), async () => await assertSameOutput(images.dir, args));
    }
  }
});

describe('compare on disks of 2^31 sectors and more (the block-status length as a C int)', () => {
  const P = ['-f', 'parallels', '-F', 'parallels'];
  const cases = [
    ['compare', ...P, 'tib-data.hds', 'tib-data.hds'],
    ['compare', '-s', ...P, 'tib-data.hds', 'tib-data.hds'],
    ['compare', '-p', ...P, 'tib-odd-data.hds', 'tib-odd-data.hds'],
    ['compare', ...P, 'tib-data.hds', 'good.hds'],
    ['compare', ...P, 'tib-empty.hds', 'tib-data.hds'],
    ['compare', ...P, 'tib-data.hds', 'tib-empty.hds'],
    ['compare', '-f', 'raw', '-F', 'parallels', 'empty.raw', 'tib-data.hds'],
    ['compare', ...P, 'tib-below.hds', 'tib-below.hds'],
  ];
  for (const args of cases) test(args.join(' '), async () => await assertSameOutput(images.dir, args));
});

describe('names as given', () => {
  const cases = [
    ['info', '-f', 'parallels', './negative-eperm.hds'],
    ['info', '--image-opts', 'driver=parallels,file.filename=negative-eperm.hds'],
    ['map', '--image-opts', 'driver=parallels,file.filename=efbig.hds'],
    ['compare', '-f', 'parallels', '-F', 'parallels', 'negative.hds', 'efbig.hds'],
  ];
  for (const args of cases) test(args.join(' '), async () => await assertSameOutput(images.dir, args));
});

describe('as a backing file', () => {
  // The top image's own data comes first; the failure is the backing file's block status.
  const cases = [
    ['info', '--backing-chain', 'top.qcow2'],
    ['info', '--backing-chain', '--output=json', 'top.qcow2'],
    ['map', 'top.qcow2'],
    ['map', '--output=json', 'top.qcow2'],
    ['compare', 'top.qcow2', 'top.qcow2'],
    ['check', 'top.qcow2'],
  ];
  for (const args of cases) test(args.join(' '), async () => await assertSameOutput(images.dir, args));
});

/**
 * convert into a target that does not exist yet, on each side separately (the harness would give
 * instar the target qemu left behind). Compared: stdout, stderr, exit status.
 */
function assertSameConvert(sources: string[], extra: string[] = []): void {
  for (const version of VERSIONS) {
    const args = (target: string) => ['convert', ...extra, '-f', 'parallels', '-O', 'raw', ...sources, target];
    const expected = runQemu(version, args('qemu.raw'), { cwd: images.dir, timeoutMs: 30_000 });
    const actual = spawnSync(process.execPath, [INSTAR_ALIAS, ...args('instar.raw'), '--qemu-version', version, ...(SANDBOXED ? [] : ['--sandbox=none'])], { cwd: images.dir, encoding: 'utf8', timeout: 30_000 });
    const label = `${version}: ${args('T').join(' ')}`;
    assert.equal(actual.stdout, expected.stdout, label);
    assert.equal(actual.stderr, expected.stderr, label);
    assert.equal(actual.status, expected.status, label);
    for (const target of ['qemu.raw', 'instar.raw']) rmSync(join(images.dir, target), { force: true });
  }
}

describe('convert', () => {
  for (const [name] of [...FAILING, ...REFUSED]) {
    test(`${name}`, () => assertSameConvert([`${name}.hds`]));
  }
  test('-p, the failing source second', () => assertSameConvert(['good.hds', 'efbig.hds'], ['-p']));
  // qemu asks every source's sector count before it creates the target: the negative one wins.
  test('a negative count after an overflowing one', () => assertSameConvert(['efbig.hds', 'other.hds', 'negative-eperm.hds']));
});
