// Hostile headers built byte by byte: instar must refuse each with qemu's own message (compared
// with both oracles' output on the same file), or open it exactly as qemu does, in bounded time.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { openSync, writeSync, ftruncateSync, closeSync } from 'node:fs';
import { VERSIONS } from '../../helpers/oracles.ts';
import { ImageError } from '../../../src/formats/types.ts';
import { asOracleSees, instarInfo, oracleError, oracleInfo, tempDir, writeImage } from './helpers.ts';
import { CLUSTER, craftQcow2, featureEntry, u32, u64, withExtensions } from './craft.ts';

const EXT_FEATURES = 0x6803f857;
const EXT_BACKING_FORMAT = 0xe2792aca;
const EXT_CRYPTO = 0x0537be77;
const EXT_BITMAPS = 0x23852875;

/** Image bytes and, when qemu refuses it, the message we expect from both oracles and instar. */
const cases: [string, () => Buffer, string | null][] = [
  ['truncated header', () => craftQcow2().subarray(0, 50), 'qcow2 header too short'],
  ['version 4', () => u32(craftQcow2(), 4, 4), 'Unsupported qcow2 version 4'],
  ['cluster_bits 8', () => u32(craftQcow2(), 20, 8), 'Unsupported cluster size: 2^8'],
  ['cluster_bits 22', () => u32(craftQcow2(), 20, 22), 'Unsupported cluster size: 2^22'],
  ['refcount_order 7', () => u32(craftQcow2(), 96, 7), 'Reference count entry width too large; may not exceed 64 bits'],
  ['header_length beyond the cluster', () => u32(craftQcow2(), 100, 200000), 'qcow2 header exceeds cluster size'],
  ['l1_size near 2^32', () => u32(craftQcow2(), 36, 0xfffffff0), 'Active L1 table too large'],
  ['L1 table too small', () => u32(craftQcow2(), 36, 0), 'L1 table is too small'],
  ['virtual size 2^63', () => u64(craftQcow2(), 24, 1n << 63n), 'Image is too big'],
  ['virtual size 2^64-1 (size_to_l1 wraps)', () => u64(craftQcow2(), 24, (1n << 64n) - 1n), 'Could not refresh total sector count: File too large'],
  ['backing name offset beyond the first cluster', () => u32(u64(craftQcow2(), 8, 0x20000n), 16, 4), 'Invalid backing file offset'],
  ['backing name too long', () => u32(u64(craftQcow2(), 8, 0x1000n), 16, 2000), 'Backing file name too long'],
  ['backing name offset past EOF (reads as zeros)', () => u32(u64(craftQcow2(), 8, 0x8000n), 16, 16).subarray(0, 0x1000), null],
  ['snapshot table past EOF (reads as zeros)', () => u64(u32(craftQcow2(), 60, 5), 64, 0x10000000n), null],
  ['huge nb_snapshots', () => u32(craftQcow2(), 60, 0xffffffff), 'Snapshot table too large'],
  ['unaligned snapshot table', () => u64(u32(craftQcow2(), 60, 1), 64, 0x10008n), 'Snapshot table offset invalid'],
  ['no refcount table', () => u32(craftQcow2(), 56, 0), 'Image does not contain a reference count table'],
  ['refcount table too large', () => u32(craftQcow2(), 56, 0x10000), 'Reference count table too large'],
  ['unknown incompatible bit', () => u64(craftQcow2(), 72, 1n << 40n), 'Unsupported qcow2 feature(s): Unknown incompatible feature: 10000000000'],
  [
    'unknown incompatible bits named by the feature table',
    () =>
      withExtensions(u64(craftQcow2(), 72, (1n << 40n) | (1n << 41n)), [
        { magic: EXT_FEATURES, data: Buffer.concat([featureEntry(0, 0, 'dirty bit'), featureEntry(0, 40, 'fancy feature')]) },
      ]),
    'Unsupported qcow2 feature(s): fancy feature, Unknown incompatible feature: 20000000000',
  ],
  ['unknown compression type', () => { const b = craftQcow2(); b[104] = 2; return b; }, 'qcow2: unknown compression type: 2'],
  ['zstd without its feature bit', () => { const b = craftQcow2(); b[104] = 1; return b; }, 'qcow2: Compression type incompatible feature bit must be set'],
  ['extended L2 with 512-byte clusters', () => u32(u64(craftQcow2(), 72, 16n), 20, 9), 'Unsupported subcluster size: 16'],
  ['legacy AES method', () => u32(craftQcow2(), 32, 1), null],
  // Offsets within int64 but past qemu's BDRV_MAX_LENGTH: the block layer fails the read (EIO).
  ['L1 table past the block layer limit', () => u64(craftQcow2(), 40, 0x7fffffffc0000000n), 'Could not read L1 table: Input/output error'],
  ['refcount table past the block layer limit', () => u64(craftQcow2(), 48, 0x7fffffffc0000000n), 'Could not initialize refcount handling: Input/output error'],
  ['snapshot table past the block layer limit', () => u64(u32(craftQcow2(), 60, 1), 64, 0x7fffffffc0000000n), 'Failed to read snapshot table: Input/output error'],
  [
    'LUKS header past the block layer limit',
    () => withExtensions(u32(craftQcow2(), 32, 2), [{ magic: EXT_CRYPTO, data: u64(u64(Buffer.alloc(16), 0, 0x7fffffffc0000000n), 8, 4096n) }]),
    'Could not read encryption header: Input/output error',
  ],
  ['unknown encryption method', () => u32(craftQcow2(), 32, 5), 'Unsupported encryption method 5'],
  ['header extension too large', () => withExtensions(craftQcow2(), [{ magic: 0x12345678, data: Buffer.alloc(8), len: 0xffffffff }]), 'Header extension too large'],
  ['backing format name too long', () => withExtensions(craftQcow2(), [{ magic: EXT_BACKING_FORMAT, data: Buffer.from('0123456789abcdef') }]), 'ERROR: ext_backing_format: len=16 too large (>=16)'],
  ['crypto header without LUKS', () => withExtensions(craftQcow2(), [{ magic: EXT_CRYPTO, data: Buffer.alloc(16) }]), 'CRYPTO header extension only expected with LUKS encryption method'],
  [
    'LUKS crypto header pointing at zeros',
    () => withExtensions(u32(craftQcow2(), 32, 2), [{ magic: EXT_CRYPTO, data: u64(u64(Buffer.alloc(16), 0, BigInt(CLUSTER * 8)), 8, 4096n) }]),
    'Volume is not in LUKS format',
  ],
  [
    'bitmaps extension with zero bitmaps',
    () => withExtensions(u64(craftQcow2(), 88, 1n), [{ magic: EXT_BITMAPS, data: Buffer.alloc(24) }]),
    'found bitmaps extension with zero bitmaps',
  ],
  // qemu-img info does not open data files (CVE-2024-4467), so it checks neither of these.
  ['data file bit without a data file name', () => u64(craftQcow2(), 72, 4n), null],
  ['data-file-raw without a data file', () => u64(craftQcow2(), 88, 2n), null],
  [
    'snapshot entry with too much extra data',
    () => {
      const b = u64(u32(Buffer.concat([craftQcow2(), Buffer.alloc(CLUSTER)]), 60, 1), 64, BigInt(CLUSTER * 4));
      return u32(b, CLUSTER * 4 + 36, 2000);
    },
    'Too much extra metadata in snapshot table entry 0\nYou can force-remove this extra metadata with qemu-img check -r all',
  ],
];

for (const [name, build, expected] of cases) {
  test(`hostile qcow2: ${name}`, (t) => {
    const path = writeImage(tempDir(t), 'hostile.qcow2', build());
    const start = process.hrtime.bigint();
    const got = instarInfo(path);
    const ms = Number(process.hrtime.bigint() - start) / 1e6;
    assert.ok(ms < 2000, `took ${ms} ms`);
    for (const v of VERSIONS) {
      if (expected === null) {
        if (got instanceof ImageError) assert.fail(`instar refused: ${got.message}`);
        assert.deepStrictEqual(asOracleSees(v, got), oracleInfo(v, path, 'qcow2'), `oracle ${v}`);
      } else {
        assert.equal(oracleError(v, path, 'qcow2'), expected, `oracle ${v} says something else`);
        assert.ok(got instanceof ImageError, 'instar opened an image qemu refuses');
        assert.equal(got.message, expected);
      }
    }
  });
}

test('hostile qcow2: snapshot table over 64 MiB (sparse file)', (t) => {
  const path = join(tempDir(t), 'bigsnap.qcow2');
  // 600 entries with 65535-byte ids and names: each is 131,110 bytes, the table ~75 MiB.
  const entries = 600;
  const fd = openSync(path, 'w');
  const image = u64(u32(craftQcow2(), 60, entries), 64, BigInt(4 * CLUSTER));
  writeSync(fd, image, 0, image.length, 0);
  let at = 4 * CLUSTER;
  const entry = Buffer.alloc(40);
  entry.writeUInt16BE(65535, 12);
  entry.writeUInt16BE(65535, 14);
  for (let i = 0; i < entries; i++) {
    at = Math.ceil(at / 8) * 8;
    writeSync(fd, entry, 0, 40, at);
    at += 40 + 2 * 65535;
  }
  ftruncateSync(fd, at);
  closeSync(fd);
  const got = instarInfo(path);
  assert.ok(got instanceof ImageError);
  for (const v of VERSIONS) assert.equal(oracleError(v, path, 'qcow2'), got.message, `oracle ${v}`);
  assert.match(got.message, /^Snapshot table is too big\nYou can force-remove all \d+ overhanging snapshots/);
});

test('hostile qcow2: LUKS method without a crypto header (10.0 refuses; 7.2 segfaults)', (t) => {
  const path = writeImage(tempDir(t), 'nocrypto.qcow2', u32(craftQcow2(), 32, 2));
  const got = instarInfo(path);
  assert.ok(got instanceof ImageError);
  assert.equal(got.message, 'Missing CRYPTO header for crypt method 2');
  assert.equal(oracleError('10.0', path, 'qcow2'), got.message);
});
