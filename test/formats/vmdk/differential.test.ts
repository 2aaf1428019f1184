// The VMDK driver against both qemu-img oracles, on images the oracles build at test time:
// info fields, every byte of the disk (vs convert -O raw) and the allocation map (vs map).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { VERSIONS, runQemu, type OracleVersion } from '../../helpers/oracles.ts';
import { driverMap, imageHash, infoDifferences, openAsHost, oracleInfo, oracleMap, oracleRawHash, qemuOk, tempDir, writePattern } from './helpers.ts';

const SIZE = 5 * 1024 * 1024 + 3 * 512; // not a whole number of grains
const SUBFORMATS = ['monolithicSparse', 'monolithicFlat', 'twoGbMaxExtentSparse', 'twoGbMaxExtentFlat', 'streamOptimized'];

interface Case {
  name: string;
  /** Builds the image with oracle `v` in `dir`; returns its path. */
  build(v: OracleVersion, dir: string): string;
}

const cases: Case[] = [];
for (const sub of SUBFORMATS) {
  cases.push({ name: `empty ${sub}`, build: (v, dir) => (qemuOk(v, ['create', '-q', '-f', 'vmdk', '-o', `subformat=${sub}`, join(dir, 'img.vmdk'), String(SIZE)]), join(dir, 'img.vmdk')) });
  cases.push({ name: `filled ${sub}`, build: (v, dir) => convertFrom(v, dir, `subformat=${sub}`, 11) });
}
cases.push({ name: 'zeroed_grain with zero writes', build: (v, dir) => {
  const img = convertFrom(v, dir, 'subformat=monolithicSparse,zeroed_grain=on', 12);
  io(v, img, ['write -z 0 128k', 'write -z 1M 192k', 'write -P 0x5a 4160k 3k']);
  return img;
} });
cases.push({ name: 'adapter_type=lsilogic hwversion=6', build: (v, dir) => convertFrom(v, dir, 'adapter_type=lsilogic,hwversion=6', 13) });
cases.push({ name: 'compat6 (version 1 header)', build: (v, dir) => convertFrom(v, dir, 'compat6=on', 14) });
cases.push({ name: 'streamOptimized, partial last grain', build: (v, dir) => convertFrom(v, dir, 'subformat=streamOptimized', 15) });
cases.push({ name: 'backing chain (parentFileNameHint)', build: (v, dir) => {
  convertFrom(v, dir, 'subformat=monolithicSparse', 16, 'base.vmdk');
  const top = join(dir, 'top.vmdk');
  qemuOk(v, ['create', '-q', '-f', 'vmdk', '-b', 'base.vmdk', '-F', 'vmdk', top]);
  io(v, top, ['write -P 0x11 100k 70k', 'write -P 0x22 3M 64k']);
  return top;
} });

function convertFrom(v: OracleVersion, dir: string, opts: string, seed: number, name = 'img.vmdk'): string {
  const raw = join(dir, `input-${seed}.raw`);
  writePattern(raw, SIZE, seed);
  const out = join(dir, name);
  qemuOk(v, ['convert', '-O', 'vmdk', '-o', opts, raw, out]);
  return out;
}

function io(v: OracleVersion, path: string, cmds: string[]): void {
  const r = runQemu(v, [...cmds.flatMap((c) => ['-c', c]), path], {}, 'qemu-io');
  if (r.status !== 0 || /error|fail/i.test(r.stdout + r.stderr)) throw new Error(`qemu-io failed: ${r.stdout}${r.stderr}`);
}

for (const built of VERSIONS) {
  for (const c of cases) {
    test(`vmdk ${c.name} (built by qemu-img ${built})`, () => {
      const { dir, cleanup } = tempDir();
      try {
        const path = c.build(built, dir);
        const opened = openAsHost(path);
        try {
          const img = opened.image;
          for (const v of VERSIONS) {
            const want = oracleInfo(v, path);
            assert.deepEqual(infoDifferences(img.info(), want), [], `info vs qemu-img ${v}`);
            const theirMap = oracleMap(v, path);
            const ourMap = driverMap(img, v);
            assert.deepEqual(ourMap, theirMap, `map vs qemu-img ${v}`);
          }
          const ours = imageHash(img);
          for (const v of VERSIONS) assert.equal(ours, oracleRawHash(v, path, dir), `bytes vs qemu-img ${v} convert -O raw`);
          assert.ok(opened.asked.every((f) => f.role === 'extent'));
        } finally {
          opened.close();
        }
      } finally {
        cleanup();
      }
    });
  }
}

test('twoGbMaxExtent images over 2 GiB: two extents, data across the boundary', () => {
  const { dir, cleanup } = tempDir();
  try {
    for (const sub of ['twoGbMaxExtentSparse', 'twoGbMaxExtentFlat']) {
      const path = join(dir, `${sub}.vmdk`);
      qemuOk('10.0', ['create', '-q', '-f', 'vmdk', '-o', `subformat=${sub}`, path, '2049M']);
      io('10.0', path, ['write -P 0x31 2047M 1536k', 'write -P 0x32 2048M 512k', 'write -P 0x33 2146435072 512']);
      const opened = openAsHost(path);
      try {
        const img = opened.image;
        assert.equal(opened.asked.length, 2);
        for (const v of VERSIONS) {
          assert.deepEqual(infoDifferences(img.info(), oracleInfo(v, path)), [], `info vs ${v}`);
          const theirMap = oracleMap(v, path);
          const ourMap = driverMap(img, v);
          assert.deepEqual(ourMap, theirMap, `map vs ${v}`);
          // The last 3 MiB, through qemu-img dd, against the same window read by us.
          const out = join(dir, 'window.raw');
          qemuOk(v, ['dd', '-f', 'vmdk', '-O', 'raw', 'bs=1M', 'skip=2046', `if=${path}`, `of=${out}`]);
          const want = readFileSync(out);
          const ours = new Uint8Array(want.length);
          img.read(ours, 2046 * 1024 * 1024);
          assert.ok(Buffer.from(ours).equals(want), `window vs ${v}`);
          rmSync(out);
        }
      } finally {
        opened.close();
      }
    }
  } finally {
    cleanup();
  }
});
