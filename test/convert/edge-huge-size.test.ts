// convert from disks past 2^53 bytes, which a JSON number cannot carry exactly: a qcow2 of
// 16 PiB + 2 MiB (2 MiB clusters), one of 1 EiB, several of those (qemu's int64 byte total of the
// target then wraps negative), and VMDKs whose extents' sector counts wrap past int64 bytes to
// 16 PiB. The guest carries such sizes as exact decimals and the host words what qemu does: the
// file system refuses the target's size (ext4's limit is 16 TiB) and the 0-byte target stays; a
// negative total is refused by qemu's option parser before anything is created; -n finds the
// target smaller. Compared with both oracles, under the default sandbox and in-process.
import { after, before, describe, test } from 'node:test';
import { tiered } from '../helpers/long.ts';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parallelsWithSectors, qemu, qemuIo, tempDir } from './helpers.ts';
import { assertSameConvert, sameConvert } from './edge-compare.ts';
import { assertSameOutput } from '../differential/harness.ts';

const { dir, cleanup } = tempDir();
const at = (name: string) => join(dir, name);

const flatVmdk = (sectors: bigint) =>
  ['# Disk DescriptorFile', 'version=1', 'CID=12345678', 'parentCID=ffffffff', 'createType="monolithicFlat"', '', `RW ${sectors} FLAT "flat.raw" 0`, '', 'ddb.virtualHWVersion = "4"', ''].join('\n');

before(() => {
  qemu(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=2M', at('p16.qcow2'), String(2n ** 54n + 2n ** 21n)]);
  qemuIo(at('p16.qcow2'), ['write -P 0x11 0 64k']);
  qemu(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=2M', at('e1.qcow2'), String(2n ** 60n)]);
  qemu(['create', '-q', '-f', 'qcow2', at('small.qcow2'), '1M']);
  writeFileSync(at('flat.raw'), Buffer.alloc(0));
  // 2^55 + 2^45 sectors: 2^64 + 2^54 bytes, wrapped to 16 PiB (EFBIG on each size query).
  writeFileSync(at('w16.vmdk'), flatVmdk(2n ** 55n + 2n ** 45n));
  // 2^63 - 2^55 + 2^45 sectors: wraps to 16 PiB too; two of them sum to a negative sector count.
  writeFileSync(at('near.vmdk'), flatVmdk(2n ** 63n - 2n ** 55n + 2n ** 45n));
  // Parallels headers of the same kind: wrapped to 8 PiB and to 16 PiB.
  parallelsWithSectors(dir, { 'w8.hds': 2n ** 55n + 2n ** 44n, 'w16.hds': 2n ** 55n + 2n ** 45n });
});
after(cleanup);

const src = (...names: string[]) => names.map((source) => ({ source }));
const junk = (size: number) => (target: string) => writeFileSync(target, Buffer.alloc(size, 0xa5));

describe('one source past 2^53 bytes', () => {
  test('16 PiB qcow2: the file system refuses the size, the empty target stays', async () => {
    const { result, left } = await sameConvert({ dir, args: ['-O', 'raw', ...src('p16.qcow2')] });
    // What qemu does, pinned (the comparison above is what instar is held to).
    assert.equal(result.stderr, 'qemu-img: t.raw: error while converting raw: Could not resize file: File too large\n');
    assert.equal(result.status, 1);
    assert.match(left, /^0 bytes/);
  });
  test('-p 16 PiB qcow2', () => assertSameConvert({ dir, args: ['-p', '-O', 'raw', ...src('p16.qcow2')] }));
  test('16 PiB qcow2 over an existing file', () => assertSameConvert({ dir, args: ['-O', 'raw', ...src('p16.qcow2')], prepare: junk(8192) }));
  test('-n 16 PiB qcow2: the target is smaller', () => assertSameConvert({ dir, args: ['-n', '-O', 'raw', ...src('p16.qcow2')], prepare: junk(1 << 20) }));
  test('-n -p 1 EiB qcow2: the size check comes before any block status', () => assertSameConvert({ dir, args: ['-n', '-p', '-O', 'raw', ...src('e1.qcow2')], prepare: junk(1 << 20) }));
  test('a small source, then 1 EiB', () => assertSameConvert({ dir, args: ['-p', '-O', 'raw', ...src('small.qcow2', 'e1.qcow2')] }));
  test('a VMDK whose size wraps to 16 PiB', () => assertSameConvert({ dir, args: ['-O', 'raw', ...src('w16.vmdk')] }));
  // w8.hds wraps the same way as w16.hds, to another size: the short tier takes w16.hds, the long tier both.
  for (const image of tiered(['w8.hds', 'w16.hds'], (name) => name === 'w16.hds')) {
    test(`-p parallels ${image}`, () => assertSameConvert({ dir, args: ['-p', '-O', 'raw', ...src(image)] }));
    test(`-n parallels ${image}`, () => assertSameConvert({ dir, args: ['-n', '-O', 'raw', ...src(image)], prepare: junk(1 << 20) }));
  }
});

describe('a byte total past int64', () => {
  const eight = Array.from({ length: 8 }, () => 'e1.qcow2');
  test('8 EiB: qemu refuses the size option, nothing created', async () => {
    const { result, left } = await sameConvert({ dir, args: ['-O', 'raw', ...src(...eight)] });
    assert.equal(result.stderr, "qemu-img: t.raw: error while converting raw: Value '-9223372036854775808' is out of range for parameter 'size'\n");
    assert.equal(left, 'absent');
  });
  test('-p 9 EiB', () => assertSameConvert({ dir, args: ['-p', '-O', 'raw', ...src(...eight, 'e1.qcow2')] }));
  test('8 EiB over an existing file', () => assertSameConvert({ dir, args: ['-O', 'raw', ...src(...eight)], prepare: junk(100) }));
  test('-n 8 EiB', () => assertSameConvert({ dir, args: ['-n', '-O', 'raw', ...src(...eight)], prepare: junk(100) }));
  // A negative sector total copies nothing, but its target is still made with the wrapped size.
  test('two VMDKs whose sector counts sum negative: a 32 PiB target refused', () => assertSameConvert({ dir, args: ['-O', 'raw', ...src('near.vmdk', 'near.vmdk')] }));
});

describe('other commands on the same images', () => {
  const cases = [['map', '--output=json', 'p16.qcow2'], ['compare', 'p16.qcow2', 'p16.qcow2'], ['info', 'w16.vmdk'], ['map', 'w16.vmdk'], ['info', 'w8.hds'], ['map', 'w16.hds'], ['compare', 'w16.hds', 'good.hds'], ['check', 'w16.hds']];
  // compare p16.qcow2 p16.qcow2 in the long tier only: qemu-img walks all 16 PiB (over 7 s CPU per
  // version, past the harness's 60 s under load); compare w16.hds good.hds compares past 2^53 too.
  for (const args of tiered(cases, (a) => a.join(' ') !== 'compare p16.qcow2 p16.qcow2')) {
    // In-process too in the long tier only (the sandboxed run is the default path).
    for (const sandboxed of tiered([true, false], (s) => s)) {
      test(`${args.join(' ')}${sandboxed ? '' : ' --sandbox=none'}`, async () => await assertSameOutput(dir, args, { sandboxed }));
    }
  }
});
