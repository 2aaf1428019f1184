// An overlay larger than what its backing file's wrapped size says, over a backing file whose
// size qemu cannot tell (a parallels sector count past int64 bytes, or negative): qemu asks the
// backing file's size before it decides that a hole lies past the backing file's end, that query
// fails, and so does the block status (and any read) of every hole of the overlay, past that end
// too. Such holes must not read as zeros: convert, map and compare fail as qemu's do, with the
// same words, exit status and target left behind.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import { runInstar, runQemu, VERSIONS } from '../helpers/oracles.ts';
import { join } from 'node:path';
import { parallelsWithSectors, qemu, qemuIo, tempDir } from './helpers.ts';
import { assertSameConvert, sameConvert } from './edge-compare.ts';
import { assertSameOutput } from '../differential/harness.ts';
import { LONG, longTest, tiered } from '../helpers/long.ts';

const { dir, cleanup } = tempDir();
const at = (name: string) => join(dir, name);

const MiB = 1024 * 1024;

before(() => {
  // 2^55 + 8192 sectors: wraps to 4 MiB (EFBIG); 2^63 + 8192: negative (its size queries fail with -8192).
  parallelsWithSectors(dir, { 'efbig.hds': 2n ** 55n + 0x2000n, 'negative.hds': 2n ** 63n + 0x2000n });
  for (const [top, backing, format] of [['top.qcow2', 'efbig.hds', 'qcow2'], ['top.qed', 'efbig.hds', 'qed'], ['top-negative.qcow2', 'negative.hds', 'qcow2']]) {
    qemu(['create', '-q', '-f', format, '-u', '-b', backing, '-F', 'parallels', at(top), '8M']);
    // The first 4 MiB (the backing file's wrapped size) all in the overlay: the first hole is past it.
    qemuIo(at(top), ['write -P 0x11 0 4M', 'write -P 0x22 5M 64k'], format);
  }
  // The same over a backing file that is fine: its holes past 1 MiB read as zeros.
  qemu(['create', '-q', '-f', 'qcow2', '-b', 'good.hds', '-F', 'parallels', at('top-good.qcow2'), '8M']);
  qemuIo(at('top-good.qcow2'), ['write -P 0x11 0 4M', 'write -P 0x22 5M 64k']);
});
after(cleanup);

const junkDisk = (target: string) => writeFileSync(target, Buffer.alloc(8 * MiB, 0xa5));
const junkSmall = (target: string) => writeFileSync(target, Buffer.alloc(8192, 0xa5));

describe('convert', () => {
  for (const top of ['top.qcow2', 'top.qed']) {
    test(`${top}: qemu fails the hole past the backing file's wrapped size`, async () => {
      const { result, left } = await sameConvert({ dir, args: ['-O', 'raw', { source: top }] });
      // What qemu does, pinned (the comparison above is what instar is held to).
      assert.equal(result.status, 1);
      assert.match(result.stderr, /^qemu-img: error while reading block status at offset 4194304: /);
      assert.match(left, /^8388608 bytes/);
    });
    // top.qed's -p, existing-target and -n runs fail at the same block status as top.qcow2's (the pinned
    // case checks qed's own failure): long tier only.
    const further = top === 'top.qcow2' ? test : longTest;
    further(`-p ${top}`, () => assertSameConvert({ dir, args: ['-p', '-O', 'raw', { source: top }] }));
    further(`${top} over an existing file`, () => assertSameConvert({ dir, args: ['-O', 'raw', { source: top }], prepare: junkSmall }));
    further(`-n ${top}: the target untouched`, () => assertSameConvert({ dir, args: ['-n', '-O', 'raw', { source: top }], prepare: junkDisk }));
  }
  test('-n -p -S 0 top.qcow2', () => assertSameConvert({ dir, args: ['-n', '-p', '-S', '0', '-O', 'raw', { source: 'top.qcow2' }], prepare: junkDisk }));
  test('the failing overlay second', () => assertSameConvert({ dir, args: ['-p', '-O', 'raw', { source: 'top-good.qcow2' }, { source: 'top.qcow2' }] }));
  test('over a backing file that is fine, the holes read as zeros', async () => {
    const { result } = await sameConvert({ dir, args: ['-O', 'raw', { source: 'top-good.qcow2' }] });
    assert.equal(result.status, 0);
  });
});

// A negative backing size: qemu (both versions) stops on an assertion in its block-status code
// (SIGABRT), which is nothing to copy; instar fails as for the overflowing size, in one line.
test('a backing file of negative size: one clear line, exit 1', () => {
  for (const version of VERSIONS) {
    const crashed = runQemu(version, ['convert', '-O', 'raw', 'top-negative.qcow2', 'q.raw'], { cwd: dir });
    assert.equal(crashed.signal, 'SIGABRT', `qemu-img ${version} no longer aborts here: compare with it instead`);
    rmSync(at('q.raw'), { force: true });
    // The short tier runs the built CLI in-process under 10.0 only: the version changes nothing in these lines.
    for (const sandbox of LONG || version === '10.0' ? [[], ['--sandbox=none']] : [[]]) {
      for (const args of [['convert', '-O', 'raw', 'top-negative.qcow2', 'i.raw'], ['map', 'top-negative.qcow2'], ['compare', 'top-negative.qcow2', 'top-good.qcow2']]) {
        const r = runInstar([...args, '--qemu-version', version, ...sandbox], { cwd: dir });
        assert.equal(r.stderr, `qemu-img: ${args[0] === 'compare' ? 'Sector allocation test failed for top-negative.qcow2' : args[0] === 'map' ? 'Could not read file metadata: Unknown error -8192' : 'error while reading block status at offset 4194304: Unknown error -8192'}\n`, args.join(' '));
        assert.equal(r.status, args[0] === 'compare' ? 3 : 1, args.join(' '));
      }
      rmSync(at('i.raw'), { force: true });
    }
  }
});

describe('map, compare and info on the same chains', () => {
  const cases = (top: string) => [
    ['map', top],
    ['map', '--output=json', top],
    ['compare', top, top],
    ['compare', '-p', top, 'top-good.qcow2'],
    ['compare', '-s', 'top-good.qcow2', top],
    ['info', '--backing-chain', top],
  ];
  for (const top of ['top.qcow2', 'top.qed']) {
    for (const args of cases(top)) {
      // The guest carries both formats' failures the same way: top.qed sandboxed in the long tier only.
      for (const sandboxed of tiered([true, false], (s) => !s || top === 'top.qcow2')) {
        test(`${args.join(' ')}${sandboxed ? '' : ' --sandbox=none'}`, async () => await assertSameOutput(dir, args, { sandboxed }));
      }
    }
  }
});
