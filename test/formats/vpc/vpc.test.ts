// vpc (VHD) driver against qemu-img 7.2 and 10.0: images built by the oracles, then info, the
// bytes of `convert -O raw` and `map` compared; hostile images built byte by byte.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { vpcDriver } from '../../../src/formats/vpc/driver.ts';
import { VERSIONS } from '../../helpers/oracles.ts';
import { LONG } from '../../helpers/long.ts';
import {
  assertInfoMatches, assertUnalignedReads, ctxFor, hashImage, hashQemuRaw, oracleMap, oracleOpenError, ourMap, ourOpenError,
  qemuOk, tempDir, withImage, writeSource,
} from './image-helpers.ts';

/** Rewrites footer fields (both copies when present) and fixes the checksum. */
function patchFooter(bytes: Uint8Array, edit: (f: DataView, b: Uint8Array) => void): void {
  const copies = [bytes.length - 512];
  if (String.fromCharCode(...bytes.subarray(0, 8)) === 'conectix') copies.push(0);
  for (const at of copies) {
    const b = bytes.subarray(at, at + 512);
    const f = new DataView(b.buffer, b.byteOffset, 512);
    edit(f, b);
    f.setUint32(64, 0);
    let sum = 0;
    for (const x of b) sum += x;
    f.setUint32(64, ~sum >>> 0);
  }
}

function checkAgainstOracles(path: string, dir: string, opts: { map?: boolean } = {}): void {
  for (const v of VERSIONS) {
    withImage(vpcDriver, path, ctxFor(v), (img) => {
      assertInfoMatches(img.info(), v, path, 'vpc');
      assert.equal(hashImage(img), hashQemuRaw(v, path, 'vpc', dir), `bytes vs convert -O raw (${v})`);
      if (opts.map !== false) assert.deepEqual(ourMap(img), oracleMap(v, path, 'vpc'), `map vs qemu-img ${v}`);
    });
  }
}

test('vpc: dynamic and fixed images converted from a mixed raw file, odd sizes', () => {
  const { dir, cleanup } = tempDir('vpc');
  try {
    const src = join(dir, 'src.raw');
    writeSource(src, 7 * 1024 * 1024 + 3 * 512 + 100, 1);
    for (const [name, opts] of [
      ['dyn', 'subformat=dynamic'],
      ['fixed', 'subformat=fixed'],
      ['dyn-force', 'subformat=dynamic,force_size=on'],
      ['fixed-force', 'subformat=fixed,force_size=on'],
    ] as const) {
      const img = join(dir, `${name}.vhd`);
      qemuOk('7.2', ['convert', '-f', 'raw', '-O', 'vpc', '-o', opts, src, img]);
      // Fixed images: map's zero flags come from holes in the file, which only the host sees.
      checkAgainstOracles(img, dir, { map: !name.startsWith('fixed') });
      withImage(vpcDriver, img, ctxFor('10.0'), (image) => assertUnalignedReads(image, 7));
    }
  } finally {
    cleanup();
  }
});

test('vpc: qemu-io writes into created images of CHS-rounded sizes', () => {
  const { dir, cleanup } = tempDir('vpc');
  try {
    for (const [i, size] of ['10000000', '33M', '300M'].entries()) {
      const img = join(dir, `w${i}.vhd`);
      qemuOk('10.0', ['create', '-q', '-f', 'vpc', img, size]);
      qemuOk('7.2', ['-f', 'vpc', '-c', 'write -P 0x5a 1M 70k', '-c', 'write -P 0x33 4095k 2k', '-c', 'write -z 6M 64k', img], 'qemu-io');
      checkAgainstOracles(img, dir);
    }
  } finally {
    cleanup();
  }
});

/**
 * The creator-application images' size in MiB. Short tier: 10 MiB, whose CHS geometry rounds as
 * 100 MiB's does (17 sectors a track) and falls short of the footer's current size (one MiB more)
 * as 100 MiB's does: the same rule per creator, on a tenth of the bytes hashed (11 images, two
 * oracles' converts each). The long tier keeps 100 MiB.
 */
const APP_MIB = LONG ? 100 : 10;

test('vpc: virtual size by creator application follows each version rule', () => {
  const { dir, cleanup } = tempDir('vpc');
  try {
    const base = join(dir, 'base.vhd');
    qemuOk('7.2', ['create', '-q', '-f', 'vpc', base, `${APP_MIB}M`]);
    qemuOk('7.2', ['-f', 'vpc', '-c', 'write -P 0x77 0 1M', base], 'qemu-io');
    const apps = ['vpc ', 'qemu', 'qem2', 'win ', 'd2v ', 'CTXS', 'tap\0', 'wa\0\0', 'xxxx', 'd2v\0'];
    for (const [i, app] of apps.entries()) {
      const bytes = new Uint8Array(readFileSync(base));
      patchFooter(bytes, (f, b) => {
        for (let k = 0; k < 4; k++) b[28 + k] = app.charCodeAt(k);
        f.setBigUint64(48, BigInt(APP_MIB + 1) * 1024n * 1024n);
      });
      const img = join(dir, `app${i}.vhd`);
      writeFileSync(img, bytes);
      checkAgainstOracles(img, dir);
    }
    // A maximal CHS geometry means "use current_size" for every creator.
    const bytes = new Uint8Array(readFileSync(base));
    patchFooter(bytes, (f) => {
      f.setUint16(56, 65535);
      f.setUint8(58, 16);
      f.setUint8(59, 255);
      f.setBigUint64(48, BigInt(APP_MIB - 1) * 1024n * 1024n);
    });
    const img = join(dir, 'maxchs.vhd');
    writeFileSync(img, bytes);
    checkAgainstOracles(img, dir);
  } finally {
    cleanup();
  }
});

test('vpc: a differencing footer is read as a dynamic disk without a parent, as qemu does', () => {
  const { dir, cleanup } = tempDir('vpc');
  try {
    const img = join(dir, 'diff.vhd');
    qemuOk('7.2', ['create', '-q', '-f', 'vpc', img, '8M']);
    qemuOk('7.2', ['-f', 'vpc', '-c', 'write -P 0x42 2M 1M', img], 'qemu-io');
    const bytes = new Uint8Array(readFileSync(img));
    patchFooter(bytes, (f) => f.setUint32(60, 4));
    const name = 'parent.vhd';
    for (let i = 0; i < name.length; i++) bytes[512 + 64 + 2 * i + 1] = name.charCodeAt(i);
    writeFileSync(img, bytes);
    checkAgainstOracles(img, dir);
    withImage(vpcDriver, img, ctxFor('10.0'), (image) => {
      assert.equal((image as unknown as { parentName: string }).parentName, 'parent.vhd');
      assert.equal(image.info()['backing-filename'], undefined);
    });
  } finally {
    cleanup();
  }
});

// Hostile images: each mutation of a small dynamic image must fail as qemu fails, quickly.
test('vpc: hostile images fail with qemu-img\'s messages', () => {
  const { dir, cleanup } = tempDir('vpc');
  try {
    const base = join(dir, 'base.vhd');
    qemuOk('7.2', ['create', '-q', '-f', 'vpc', base, '20M']);
    qemuOk('7.2', ['-f', 'vpc', '-c', 'write -P 1 0 3M', base], 'qemu-io');
    const dyn = (edit: (h: DataView) => void) => (b: Uint8Array) => edit(new DataView(b.buffer, b.byteOffset + 512, 1024));
    const footer = (edit: (f: DataView, b: Uint8Array) => void) => (b: Uint8Array) => patchFooter(b, edit);
    const cases: [string, (b: Uint8Array) => Uint8Array | void][] = [
      ['empty file', () => new Uint8Array(0)],
      ['short file', () => new Uint8Array(300)],
      ['truncated after footer', (b) => b.slice(0, 600)],
      ['truncated data', (b) => b.slice(0, b.length - 4096)],
      ['bad footer checksum', (b) => void (b[64] ^= 1)],
      ['no cookie anywhere', (b) => b.fill(0, 0, 8).fill(0, b.length - 512, b.length - 504)],
      ['bad dynamic magic', (b) => void b.set([0x78], 512)],
      ['block size 0', dyn((h) => h.setUint32(32, 0))],
      ['block size not a power of two', dyn((h) => h.setUint32(32, 3000))],
      ['block size 2 GiB', dyn((h) => h.setUint32(32, 0x8000_0000))],
      ['block size 512', dyn((h) => h.setUint32(32, 512))],
      ['max table entries -1', dyn((h) => h.setUint32(28, 0xffff_ffff))],
      ['max table entries 2^30', dyn((h) => h.setUint32(28, 0x4000_0000))],
      ['max table entries 1', dyn((h) => h.setUint32(28, 1))],
      ['BAT near 2^63', dyn((h) => h.setBigUint64(16, 0x7fff_ffff_ffff_0000n))],
      ['BAT near 2^64', dyn((h) => h.setBigUint64(16, 0xffff_ffff_ffff_fe00n))],
      ['BAT past EOF', dyn((h) => h.setBigUint64(16, 100_000_000n))],
      ['BAT entry past EOF', (b) => void new DataView(b.buffer).setUint32(1536 + 4, 0x7fff_ffff)],
      ['dynamic header near 2^64', footer((f) => f.setBigUint64(16, 0xffff_ffff_ffff_fe00n))],
      ['dynamic header past EOF', footer((f) => f.setBigUint64(16, 100_000_000n))],
      ['table both too small and too large', (b) => {
        patchFooter(b, (f, fb) => { fb.set([0x77, 0x69, 0x6e, 0x20], 28); f.setBigUint64(48, 300n << 30n); });
        const h = new DataView(b.buffer, b.byteOffset + 512, 1024);
        h.setUint32(32, 512);
        h.setUint32(28, 2 ** 29);
      }],
      ['table read over 2 GiB', dyn((h) => h.setUint32(28, 536_870_900))],
      ['current_size 2^64-1 from Hyper-V', footer((f, fb) => { fb.set([0x77, 0x69, 0x6e, 0x20], 28); f.setBigUint64(48, 2n ** 64n - 1n); })],
      ['current_size just over 2040 GiB', footer((f, fb) => { fb.set([0x77, 0x69, 0x6e, 0x20], 28); f.setBigUint64(48, 0xff00_0001n * 512n); })],
      ['current_size 2040 GiB, table too small', footer((f, fb) => { fb.set([0x77, 0x69, 0x6e, 0x20], 28); f.setBigUint64(48, 0xff00_0000n * 512n); })],
    ];
    for (const [label, mutate] of cases) {
      const bytes = new Uint8Array(readFileSync(base));
      const result = mutate(bytes) ?? bytes;
      const img = join(dir, 'h.vhd');
      writeFileSync(img, result);
      for (const v of VERSIONS) {
        const expected = oracleOpenError(v, img, 'vpc');
        assert.equal(ourOpenError(vpcDriver, result, ctxFor(v), img, label), expected, `${label} (${v})`);
      }
    }
  } finally {
    cleanup();
  }
});

test('vpc: damage qemu tolerates still reads as qemu reads it', () => {
  const { dir, cleanup } = tempDir('vpc');
  try {
    const base = join(dir, 'base.vhd');
    qemuOk('7.2', ['create', '-q', '-f', 'vpc', base, '12M']);
    qemuOk('7.2', ['-f', 'vpc', '-c', 'write -P 0x31 0 3M', '-c', 'write -P 0x32 7M 64k', base], 'qemu-io');
    const cases: [string, (b: Uint8Array) => void][] = [
      ['dynamic header checksum wrong (qemu does not check it)', (b) => void (b[512 + 36] ^= 1)],
      // qemu reads allocated blocks whole, whatever their sector bitmaps say.
      ['sector bitmaps cleared', (b) => {
        const v = new DataView(b.buffer, b.byteOffset);
        for (let i = 0; i < 6; i++) {
          const entry = v.getUint32(1536 + 4 * i);
          if (entry !== 0xffff_ffff) b.fill(0, entry * 512, entry * 512 + 512);
        }
      }],
      // The footer at offset 0 says fixed: qemu then reads the file itself, from offset 0.
      ['footer copy at offset 0 of type fixed', (b) => patchFooter(b, (f) => f.setUint32(60, 2))],
      ['unknown disk type 7', (b) => patchFooter(b, (f) => f.setUint32(60, 7))],
      ['zero geometry', (b) => patchFooter(b, (f) => f.setUint32(56, 0))],
    ];
    for (const [label, mutate] of cases) {
      const bytes = new Uint8Array(readFileSync(base));
      mutate(bytes);
      const img = join(dir, 'm.vhd');
      writeFileSync(img, bytes);
      // Fixed-type reads come from the file itself; map's zero flags then come from the file's
      // holes and end, which only the host sees.
      assert.doesNotThrow(() => checkAgainstOracles(img, dir, { map: !label.includes('fixed') }), label);
    }
  } finally {
    cleanup();
  }
});

/** A dynamic VHD built from scratch, for block sizes qemu never creates itself. */
function buildDynamicVhd(size: number, blockSize: number, blocks: Map<number, number>): Uint8Array {
  const entries = Math.ceil(size / blockSize);
  const bitmap = (Math.floor(blockSize / 4096) + 511) & ~511;
  const batBytes = Math.ceil((entries * 4) / 512) * 512;
  const dataStart = 1536 + batBytes;
  const out = new Uint8Array(dataStart + blocks.size * (bitmap + blockSize) + 512);
  const v = new DataView(out.buffer);
  const footer = out.subarray(0, 512);
  const f = new DataView(footer.buffer, 0, 512);
  footer.set(new TextEncoder().encode('conectix'), 0);
  f.setUint32(8, 2);
  f.setUint32(12, 0x10000);
  f.setBigUint64(16, 512n);
  footer.set(new TextEncoder().encode('win '), 28);
  f.setBigUint64(40, BigInt(size));
  f.setBigUint64(48, BigInt(size));
  f.setUint32(60, 3);
  out.set(new TextEncoder().encode('cxsparse'), 512);
  v.setBigUint64(520, 0xffff_ffff_ffff_ffffn);
  v.setBigUint64(528, 1536n);
  v.setUint32(536, 0x10000);
  v.setUint32(540, entries);
  v.setUint32(544, blockSize);
  let sum = 0;
  for (const x of out.subarray(512, 1536)) sum += x;
  v.setUint32(548, ~sum >>> 0);
  out.fill(0xff, 1536, 1536 + batBytes);
  let at = dataStart;
  for (const [index, fill] of blocks) {
    v.setUint32(1536 + 4 * index, at / 512);
    out.fill(0xff, at, at + bitmap);
    out.fill(fill, at + bitmap, at + bitmap + blockSize);
    for (let p = at + bitmap; p < at + bitmap + blockSize; p += 4096) v.setUint32(p, p);
    at += bitmap + blockSize;
  }
  sum = 0;
  for (let i = 0; i < 512; i++) if (i < 64 || i >= 68) sum += footer[i];
  f.setUint32(64, ~sum >>> 0);
  out.set(footer, at);
  return out;
}

test('vpc: dynamic disks with other block sizes, built byte by byte', () => {
  const { dir, cleanup } = tempDir('vpc');
  try {
    for (const [blockSize, size] of [[512, 64 * 1024 + 512], [4096, 1024 * 1024], [512 * 1024, 5 * 1024 * 1024 + 512], [32 * 1024 * 1024, 70 * 1024 * 1024]]) {
      const entries = Math.ceil(size / blockSize);
      const blocks = new Map([[0, 0x41], [Math.floor(entries / 2), 0x42], [entries - 1, 0x43]]);
      const img = join(dir, `bs${blockSize}.vhd`);
      writeFileSync(img, buildDynamicVhd(size, blockSize, blocks));
      checkAgainstOracles(img, dir);
    }
  } finally {
    cleanup();
  }
});

test('vpc: a fixed VHD with a ragged tail is refused as qemu refuses it', () => {
  const { dir, cleanup } = tempDir('vpc');
  try {
    const img = join(dir, 'fixed.vhd');
    qemuOk('7.2', ['create', '-q', '-f', 'vpc', '-o', 'subformat=fixed', img, '3M']);
    checkAgainstOracles(img, dir, { map: false });
    const bytes = new Uint8Array([...readFileSync(img), ...new Uint8Array(100).fill(7)]);
    writeFileSync(img, bytes);
    for (const v of VERSIONS) assert.equal(ourOpenError(vpcDriver, bytes, ctxFor(v), img, 'ragged'), oracleOpenError(v, img, 'vpc'));
  } finally {
    cleanup();
  }
});
