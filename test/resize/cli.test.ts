// resize's options, sizes and errors, and raw images, against qemu-img 7.2 and 10.0: the same
// stdout, stderr, exit status and resulting files. Most cases run in-process; a few through the
// real sandbox.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { VERSIONS, runQemu } from '../helpers/oracles.ts';
import { assertSameResize } from './harness.ts';
import { ResizeDirs } from '../check/fast-dirs.ts';
// In the long tier its unsandboxed instar runs launch the built CLI as before (check/instar-sync.ts).
import { LONG } from '../helpers/long.ts';

const dirs = new ResizeDirs();
const images: Record<string, Uint8Array> = {};

/** A file made by qemu-img create (and written by qemu-io). */
function made(name: string, format: string, size: string, ...writes: string[]): Uint8Array {
  const path = dirs.path(name);
  assert.equal(runQemu('10.0', ['create', '-q', '-f', format, path, size]).status, 0);
  if (writes.length > 0) assert.equal(runQemu('10.0', ['-f', format, ...writes.flatMap((w) => ['-c', w]), path], {}, 'qemu-io').status, 0);
  return new Uint8Array(readFileSync(path));
}

before(() => {
  images.raw = made('r.raw', 'raw', '1M', 'write -P 0x5a 0 300k', 'write -P 0x6b 900k 100k');
  images.odd = new Uint8Array(1000).fill(7);
  for (const format of ['vmdk', 'vpc', 'vdi', 'vhdx', 'qcow', 'parallels']) images[format] = made(`x.${format}`, format, '1M');
  images.qed = made('e.qed', 'qed', '1M', 'write -P 5 0 100k');
  const luks = dirs.path('l.luks');
  const secret = ['--object', 'secret,id=sec0,data=abc'];
  assert.equal(runQemu('10.0', ['create', '-q', '-f', 'luks', ...secret, '-o', 'key-secret=sec0,iter-time=10', luks, '1M']).status, 0);
  images.luks = new Uint8Array(readFileSync(luks));
});
after(() => dirs.remove());

const RAW_CASES: string[][] = [
  ['-f', 'raw', 'r.raw', '+1M'],
  ['-f', 'raw', 'r.raw', '--', '-512K'],
  ['-f', 'raw', 'r.raw', '-512K'],
  ['--shrink', '-f', 'raw', 'r.raw', '-512K'],
  ['-f', 'raw', 'r.raw', '1000'],
  ['--shrink', '-f', 'raw', 'r.raw', '1000'],
  ['-f', 'raw', 'r.raw', '--', '+0'],
  ['-f', 'raw', 'r.raw', '0'],
  ['-f', 'raw', 'r.raw', '18446744073709551615'],
  ['-f', 'raw', 'r.raw', '18446744073709551616'],
  ['-f', 'raw', 'r.raw', '9223372036854775807'],
  ['-f', 'raw', 'r.raw', '+abc'],
  ['-f', 'raw', 'r.raw', '--', '+-1'],
  ['-f', 'raw', 'r.raw', '0x1k'],
  ['r.raw'],
  ['r.raw', '1', '2'],
  // 10.0 checks the options before a third positional, and stops there.
  ['--preallocation=bad', 'r.raw', '1', '2'],
  ['r.raw', '1', '2', '--preallocation=bad'],
  ['-q', '-f', 'raw', 'r.raw', '3M'],
  ['--preallocation=bad', 'r.raw', '4M'],
  ['--preallocation=bad', '--object', 'foo', 'r.raw', '4M'],
  ['--object', 'foo', '--preallocation=bad', 'r.raw', '4M'],
  ['--preallocation=full', '-f', 'raw', 'r.raw', '5M'],
  ['--preallocation=falloc', '-f', 'raw', 'r.raw', '+3M'],
  ['--preallocation=metadata', '-f', 'raw', 'r.raw', '7M'],
  ['--preallocation=full', '-f', 'raw', 'r.raw', '1M'],
  ['--preallocation=falloc', '--shrink', '-f', 'raw', 'r.raw', '1k'],
  ['-U', 'r.raw', '8M'],
  ['-f', 'qcow2', 'r.raw', '2M'],
  ['-f', 'raw', 'nonexist', '1M'],
  ['-f', 'raw', 'nonexist', '1x'],
  ['--object', 'secret,id=s,data=x', '-f', 'raw', 'r.raw', '2M'],
  ['--image-opts', 'driver=raw,file.filename=r.raw', '3M'],
  ['--image-opts', '-f', 'raw', 'r.raw', '1M'],
  ['--image-opts', 'driver=raw,file.filename=r.raw,read-only=on', '3M'],
  ['--image-opts', 'driver=raw,file.filename=r.raw,force-share=on', '3M'],
  ['--image-opts', 'driver=raw,file.filename=r.raw,foo=bar', '3M'],
  ['-f', 'raw', 'odd.raw', '+512'],
];

test('resize options, sizes and raw images match qemu-img', () => {
  for (const v of VERSIONS) {
    for (const [i, args] of RAW_CASES.entries()) {
      // The guest only carries each result across: the short tier sends a case through it under one release (in-process under the other), the long tier under both.
      const r = dirs.run(v, { 'r.raw': images.raw, 'odd.raw': images.odd }, args, { sandboxed: (LONG || v === '7.2') && (i === 0 || args[0] === '--preallocation=full') });
      assertSameResize(r, `qemu-img ${v} resize ${args.join(' ')}`);
    }
  }
});

test('a probed raw image: the warning qemu prints (instar probes raw only with --unsafe-quirks)', () => {
  for (const v of VERSIONS) {
    for (const args of [['r.raw', '+1M'], ['r.raw', '1k']]) {
      const r = dirs.run(v, { 'r.raw': images.raw }, args, { instarArgs: ['--unsafe-quirks'] });
      assertSameResize(r, `qemu-img ${v} resize ${args.join(' ')}`);
    }
    const refused = dirs.run(v, { 'r.raw': images.raw }, ['r.raw', '+1M']);
    assert.equal(refused.instar.status, 1);
    assert.match(refused.instar.stderr, /instar does not fall back to raw/);
    assert.ok(readFileSync(`${refused.idir}/r.raw`).equals(Buffer.from(images.raw)), 'nothing written');
  }
});

test('formats qemu cannot resize: its message, nothing written', () => {
  for (const v of VERSIONS) {
    for (const format of ['vmdk', 'vpc', 'vdi', 'vhdx', 'qcow', 'parallels']) {
      const name = `x.${format}`;
      for (const args of format === 'vmdk' ? [[name, '2M'], ['--shrink', name, '9223372036854775807']] : [[name, '2M']]) {
        const r = dirs.run(v, { [name]: images[format] }, args, { sandboxed: (LONG || v === '10.0') && format === 'vhdx' });
        assertSameResize(r, `qemu-img ${v} resize ${args.join(' ')}`);
      }
    }
  }
});

test('qed: grows (the size in its header), refuses what qemu refuses', () => {
  for (const v of VERSIONS) {
    for (const args of [['e.qed', '2G'], ['e.qed', '+1'], ['--shrink', 'e.qed', '512k'], ['e.qed', '100T'], ['--preallocation=falloc', 'e.qed', '3G']]) {
      const r = dirs.run(v, { 'e.qed': images.qed }, args, { sandboxed: (LONG || v === '7.2') && args[1] === '2G' });
      assertSameResize(r, `qemu-img ${v} resize ${args.join(' ')}`);
    }
  }
});

test('LUKS: the file resized to the disk plus the payload offset', () => {
  const open = ['--object', 'secret,id=sec0,data=abc', '--image-opts', 'driver=luks,file.filename=l.luks,key-secret=sec0'];
  for (const v of VERSIONS) {
    for (const size of [['20M'], ['--shrink', '512k'], ['--preallocation=full', '3M']]) {
      const args = [...open, ...size];
      const r = dirs.run(v, { 'l.luks': images.luks }, args, { sandboxed: (LONG || v === '10.0') && size[0] === '20M' });
      assertSameResize(r, `qemu-img ${v} resize ${args.join(' ')}`);
    }
    assertSameResize(dirs.run(v, { 'l.luks': images.luks }, ['l.luks', '2G']), `qemu-img ${v} resize l.luks 2G (no key)`);
  }
});
