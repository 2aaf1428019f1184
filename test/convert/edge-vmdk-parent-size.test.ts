// A VMDK child (parentFileNameHint) over a parent whose size qemu cannot tell: a monolithicFlat
// descriptor whose extents pass int64 bytes (2^55 + 8 sectors, wrapped to 4 KiB, EFBIG). As for
// qcow2, qcow and qed overlays (edge-backing-size.test.ts), qemu asks the parent's size before it
// decides that a hole lies past the parent's end; the query fails, and so does the block status of
// every unallocated grain of the child, past the parent's wrapped size too. convert, map and
// compare fail as qemu's do, with the same words, exit status and target left behind.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { qemu, qemuIo, tempDir } from './helpers.ts';
import { assertSameConvert, sameConvert } from './edge-compare.ts';
import { assertSameOutput } from '../differential/harness.ts';
import { longTest, tiered } from '../helpers/long.ts';

const { dir, cleanup } = tempDir();
const at = (name: string) => join(dir, name);
const MiB = 1024 * 1024;

/** A monolithicFlat descriptor with CID 12345678 and the given extent lines. */
const flatDescriptor = (extents: string[]) =>
  ['# Disk DescriptorFile', 'version=1', 'CID=12345678', 'parentCID=ffffffff', 'createType="monolithicFlat"', '', ...extents, '', 'ddb.virtualHWVersion = "4"', ''].join('\n');

/** Copies `from` to `to` with every `oldName` (the parent's) replaced by `newName`, of the same length. */
function renameParent(from: string, to: string, oldName: string, newName: string): void {
  assert.equal(oldName.length, newName.length);
  const bytes = readFileSync(at(from));
  const i = bytes.indexOf(`parentFileNameHint="${oldName}"`);
  assert.ok(i >= 0, `${from} names ${oldName}`);
  bytes.write(newName, i + 'parentFileNameHint="'.length, 'latin1');
  writeFileSync(at(to), bytes);
}

before(() => {
  writeFileSync(at('empty.raw'), Buffer.alloc(0));
  writeFileSync(at('good.raw'), Buffer.alloc(8 * MiB, 0x33));
  // Parents of the same CID: one fine (8 MiB of 0x33), one whose size passes int64 bytes, one
  // of another CID (qemu refuses to read through it, but block status asks the size first).
  writeFileSync(at('pgood.vmdk'), flatDescriptor(['RW 16384 FLAT "good.raw" 0']));
  writeFileSync(at('pefbg.vmdk'), flatDescriptor([`RW ${2n ** 55n + 8n} FLAT "empty.raw" 0`]));
  writeFileSync(at('pcidx.vmdk'), flatDescriptor([`RW ${2n ** 55n + 8n} FLAT "empty.raw" 0`]).replace('CID=12345678', 'CID=87654321'));
  // Children made over the good parent, written through it, then pointed at the bad one: a text
  // descriptor with a sparse extent file (twoGbMaxExtentSparse), and monolithicSparse (embedded).
  for (const [child, subformat] of [['split', 'twoGbMaxExtentSparse'], ['mono', 'monolithicSparse']]) {
    qemu(['create', '-q', '-f', 'vmdk', '-o', `subformat=${subformat}`, '-b', 'pgood.vmdk', '-F', 'vmdk', at(`${child}.vmdk`), '8M']);
    // The first 64 KiB covers the parent's wrapped size (4 KiB): the first hole lies past it.
    qemuIo(at(`${child}.vmdk`), ['write -P 0x11 0 64k', 'write -P 0x22 2M 64k'], 'vmdk');
    renameParent(`${child}.vmdk`, `${child}-efbig.vmdk`, 'pgood.vmdk', 'pefbg.vmdk');
    renameParent(`${child}.vmdk`, `${child}-cid.vmdk`, 'pgood.vmdk', 'pcidx.vmdk');
  }
  // A child with a hole at 0, inside the parent's wrapped size.
  qemu(['create', '-q', '-f', 'vmdk', '-b', 'pgood.vmdk', '-F', 'vmdk', at('hole0.vmdk'), '8M']);
  qemuIo(at('hole0.vmdk'), ['write -P 0x44 1M 64k'], 'vmdk');
  renameParent('hole0.vmdk', 'hole0-efbig.vmdk', 'pgood.vmdk', 'pefbg.vmdk');
});
after(cleanup);

const junkDisk = (target: string) => writeFileSync(target, Buffer.alloc(8 * MiB, 0xa5));
const junkSmall = (target: string) => writeFileSync(target, Buffer.alloc(8192, 0xa5));

describe('convert', () => {
  for (const child of ['split-efbig.vmdk', 'mono-efbig.vmdk']) {
    test(`${child}: qemu fails the hole past the parent's wrapped size`, async () => {
      const { result, left } = await sameConvert({ dir, args: ['-O', 'raw', { source: child }] });
      // What qemu does, pinned (the comparison above is what instar is held to).
      assert.equal(result.status, 1);
      assert.equal(result.stderr, 'qemu-img: error while reading block status at offset 65536: File too large\n');
      assert.match(left, /^8388608 bytes/);
    });
    // mono-efbig.vmdk's -p and existing-target runs fail at the same block status as split-efbig.vmdk's
    // (its pinned case and -n check the embedded descriptor's own failure): long tier only.
    const further = child === 'split-efbig.vmdk' ? test : longTest;
    further(`-p ${child}`, () => assertSameConvert({ dir, args: ['-p', '-O', 'raw', { source: child }] }));
    further(`${child} over an existing file`, () => assertSameConvert({ dir, args: ['-O', 'raw', { source: child }], prepare: junkSmall }));
    test(`-n ${child}: the target untouched`, () => assertSameConvert({ dir, args: ['-n', '-O', 'raw', { source: child }], prepare: junkDisk }));
  }
  test('-n -p -S 0 split-efbig.vmdk', () => assertSameConvert({ dir, args: ['-n', '-p', '-S', '0', '-O', 'raw', { source: 'split-efbig.vmdk' }], prepare: junkDisk }));
  test('a parent of another CID: the size fails first', () => assertSameConvert({ dir, args: ['-O', 'raw', { source: 'mono-cid.vmdk' }] }));
  test('a hole inside the parent\'s wrapped size', () => assertSameConvert({ dir, args: ['-p', '-O', 'raw', { source: 'hole0-efbig.vmdk' }] }));
  test('the failing child second', () => assertSameConvert({ dir, args: ['-p', '-O', 'raw', { source: 'mono.vmdk' }, { source: 'mono-efbig.vmdk' }] }));
  test('over the good parent, the holes read as the parent', async () => {
    const { result } = await sameConvert({ dir, args: ['-O', 'raw', { source: 'mono.vmdk' }] });
    assert.equal(result.status, 0);
  });
});

describe('map, compare and info on the same chains', () => {
  const cases = (child: string) => [
    ['map', child],
    ['map', '--output=json', child],
    ['compare', child, child],
    ['compare', '-p', child, 'mono.vmdk'],
    ['compare', '-s', 'mono.vmdk', child],
    ['info', '--backing-chain', child],
  ];
  for (const child of ['split-efbig.vmdk', 'mono-efbig.vmdk', 'hole0-efbig.vmdk']) {
    for (const args of cases(child)) {
      // The guest carries every chain's failure the same way: sandboxed on split-efbig.vmdk, in-process on
      // all three in the short tier; the long tier runs every chain both ways.
      for (const sandboxed of tiered([true, false], (s) => !s || child === 'split-efbig.vmdk')) {
        test(`${args.join(' ')}${sandboxed ? '' : ' --sandbox=none'}`, async () => await assertSameOutput(dir, args, { sandboxed }));
      }
    }
  }
});
