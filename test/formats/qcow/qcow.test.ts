// qcow (v1) driver against qemu-img 7.2 and 10.0: images converted (plain and compressed) from a
// mixed raw file, backing chains written by qemu-io; info, the bytes of `convert -O raw` and
// `map` compared; hostile headers and tables built byte by byte.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { deflateRawSync } from 'node:zlib';
import { join } from 'node:path';
import { MemoryDevice } from '../../../src/io/fd-device.ts';
import { qcowDriver } from '../../../src/formats/qcow/driver.ts';
import { ImageError } from '../../../src/formats/types.ts';
import { VERSIONS, runQemu } from '../../helpers/oracles.ts';
import {
  assertUnalignedReads, checkAgainstOracles, hashImage, openChain, oracleOpenError, ourMap, ourOpenError, qemuOk, tempDir, writeSource,
  type MapEntry,
} from './legacy-helpers.ts';

test('qcow: an image converted from a mixed raw file', () => {
  const { dir, cleanup } = tempDir('qcow');
  try {
    const src = join(dir, 'src.raw');
    writeSource(src, 3 * 1024 * 1024 + 5 * 512, 21);
    const img = join(dir, 'plain.qcow');
    qemuOk('7.2', ['convert', '-f', 'raw', '-O', 'qcow', src, img]);
    checkAgainstOracles(img, 'qcow', dir);
    openChain(img, ['qcow'], (image) => assertUnalignedReads(image, 3));
  } finally {
    cleanup();
  }
});

test('qcow: compressed clusters (qemu-io write -c), adjacent and mixed with plain ones', () => {
  const { dir, cleanup } = tempDir('qcow');
  try {
    const img = join(dir, 'compressed.qcow');
    qemuOk('7.2', ['create', '-q', '-f', 'qcow', img, '3M']);
    const writes = ['write -c -P 7 0 4k', 'write -c -P 8 4k 4k', 'write -c -P 9 12k 4k', 'write -P 10 16k 6k', 'write -c -P 11 1M 4k'];
    qemuOk('7.2', ['-f', 'qcow', ...writes.flatMap((w) => ['-c', w]), img], 'qemu-io');
    qemuOk('10.0', ['-f', 'qcow', '-c', 'write -c -P 12 2M 4k', img], 'qemu-io');
    checkAgainstOracles(img, 'qcow', dir);
    openChain(img, ['qcow'], (image) => assertUnalignedReads(image, 4));
  } finally {
    cleanup();
  }
});

test('qcow: backing chains (qcow over qcow, qcow over a smaller raw file) written by qemu-io', () => {
  const { dir, cleanup } = tempDir('qcow');
  try {
    const src = join(dir, 'src.raw');
    writeSource(src, 2 * 1024 * 1024, 22);
    const base = join(dir, 'base.qcow');
    qemuOk('7.2', ['convert', '-f', 'raw', '-O', 'qcow', src, base]);
    const top = join(dir, 'top.qcow');
    qemuOk('10.0', ['create', '-q', '-f', 'qcow', '-b', 'base.qcow', '-F', 'qcow', top]);
    qemuOk('7.2', ['-f', 'qcow', '-c', 'write -P 0x5a 1000k 70k', '-c', 'write -z 64k 8k', top], 'qemu-io');
    checkAgainstOracles(top, 'qcow', dir, { backing: ['qcow'] });

    const over = join(dir, 'over-raw.qcow');
    qemuOk('10.0', ['create', '-q', '-f', 'qcow', '-b', 'src.raw', '-F', 'raw', over, '5M']);
    qemuOk('7.2', ['-f', 'qcow', '-c', 'write -P 0x11 1536k 1M', '-c', 'write -P 0x22 4M 4k', over], 'qemu-io');
    checkAgainstOracles(over, 'qcow', dir, { backing: ['raw'] });
  } finally {
    cleanup();
  }
});

/** A qcow header (48 bytes), big-endian, then `tail`. */
function header(fields: Partial<{ version: number; backingOffset: bigint; backingSize: number; size: bigint; clusterBits: number; l2Bits: number; crypt: number; l1Offset: bigint }>, tail = Buffer.alloc(4096)): Buffer {
  const h = Buffer.alloc(48);
  h.writeUInt32BE(0x514649fb, 0);
  h.writeUInt32BE(fields.version ?? 1, 4);
  h.writeBigUInt64BE(fields.backingOffset ?? 0n, 8);
  h.writeUInt32BE(fields.backingSize ?? 0, 16);
  h.writeBigUInt64BE(fields.size ?? 1048576n, 24);
  h[32] = fields.clusterBits ?? 12;
  h[33] = fields.l2Bits ?? 9;
  h.writeUInt32BE(fields.crypt ?? 0, 36);
  h.writeBigUInt64BE(fields.l1Offset ?? 48n, 40);
  return Buffer.concat([h, tail]);
}

test('qcow: hostile headers fail with qemu wording, fast and small', () => {
  const { dir, cleanup } = tempDir('qcow-hostile');
  try {
    const cases: [string, Buffer][] = [
      ['v2', header({ version: 2 })],
      ['v7', header({ version: 7 })],
      ['size-1', header({ size: 1n })],
      ['cluster-bits', header({ clusterBits: 17 })],
      ['cluster-bits-low', header({ clusterBits: 8 })],
      ['l2-bits', header({ l2Bits: 14 })],
      ['crypt', header({ crypt: 2 })],
      ['size-wrap', header({ size: (1n << 64n) - 1n })],
      ['l1-too-big', header({ size: 1n << 62n, clusterBits: 9, l2Bits: 6 })],
      ['backing-name-long', header({ backingOffset: 100n, backingSize: 1024 })],
      ['l1-past-limit', header({ l1Offset: (1n << 63n) - 10n })],
      ['l1-over-request-max', header({ size: (0x7ffffe00n / 8n + 1n) * 2n ** 29n, clusterBits: 16, l2Bits: 13 })],
      ['backing-past-limit', header({ backingOffset: (1n << 63n) - 10n, backingSize: 100 })],
      ['truncated', header({}).subarray(0, 20)],
    ];
    for (const [name, bytes] of cases) {
      const path = join(dir, `${name}.qcow`);
      writeFileSync(path, bytes);
      assert.equal(ourOpenError('qcow', bytes, path), oracleOpenError(path, 'qcow'), name);
    }
  } finally {
    cleanup();
  }
});

test('qcow: a compressed stream longer than a cluster (and a deflate bomb) reads its first cluster, as qemu', () => {
  const { dir, cleanup } = tempDir('qcow-hostile');
  try {
    const streams: [string, Buffer, boolean][] = [
      ['two-clusters', deflateRawSync(Buffer.concat([Buffer.alloc(4096, 0x41), Buffer.alloc(4096, 0x42)]), { windowBits: 12 }), true],
      ['bomb', deflateRawSync(Buffer.alloc(4 * 1024 * 1024, 0x43), { level: 9 }), true],
      ['short', deflateRawSync(Buffer.alloc(2048, 0x44), { windowBits: 12 }), false],
    ];
    for (const [name, stream, readable] of streams) {
      assert.ok(stream.length < 4096, `${name} fits the size field`);
      const bytes = Buffer.alloc(4 * 4096);
      header({ size: 8192n, l1Offset: 4096n }, Buffer.alloc(0)).copy(bytes, 0);
      bytes.writeBigUInt64BE(8192n, 4096);
      bytes.writeBigUInt64BE((1n << 63n) | (BigInt(stream.length) << 51n) | 12288n, 8192);
      stream.copy(bytes, 12288);
      const path = join(dir, `${name}.qcow`);
      writeFileSync(path, bytes);
      const img = qcowDriver.open(new MemoryDevice(bytes), { writable: false });
      const r = runQemu('10.0', ['convert', '-f', 'qcow', '-O', 'raw', path, join(dir, 'out.raw')], { timeoutMs: 20_000 });
      assert.equal(r.status === 0, readable, `${name}: ${r.stderr}`);
      if (readable) {
        checkAgainstOracles(path, 'qcow', dir);
      } else {
        assert.match(r.stderr, /Input\/output error/, name);
        assert.throws(() => img.read(new Uint8Array(4096), 0), (e: unknown) => e instanceof ImageError, name);
      }
    }
  } finally {
    cleanup();
  }
});

test('qcow: tables past the end of the file, a huge sparse disk', () => {
  const { dir, cleanup } = tempDir('qcow-hostile');
  try {
    // L1 far past EOF (reads as zeros): the biggest disk qemu can open (its L1 table fills one
    // maximal request), all holes, opens small.
    const huge = header({ size: (0x7ffffe00n / 8n) * 2n ** 29n, clusterBits: 16, l2Bits: 13, l1Offset: 1n << 40n });
    const path = join(dir, 'huge.qcow');
    writeFileSync(path, huge);
    const before = process.memoryUsage().arrayBuffers;
    const img = qcowDriver.open(new MemoryDevice(huge), { writable: false });
    assert.ok(process.memoryUsage().arrayBuffers - before < 64 * 1024 * 1024);
    const theirs = JSON.parse(qemuOk('10.0', ['info', '--output=json', '-f', 'qcow', path]));
    assert.deepEqual(img.info(), { format: 'qcow', 'dirty-flag': false, 'virtual-size': theirs['virtual-size'], 'cluster-size': 65536 });
    const buf = new Uint8Array(65536).fill(1);
    img.read(buf, img.virtualSize - 65536);
    assert.ok(buf.every((b) => b === 0));

    // An L2 entry pointing past qemu's request limit, and a "compressed" cluster that is not a
    // deflate stream: qemu's convert fails on both with EIO; instar's read throws the same.
    const entries: [string, bigint][] = [
      ['far', (1n << 63n) - 4096n],
      ['not-deflate', (1n << 63n) | (4095n << 51n) | 8192n],
    ];
    for (const [name, entry] of entries) {
      const image = Buffer.alloc(3 * 4096);
      header({ size: 8192n, l1Offset: 4096n }, Buffer.alloc(0)).copy(image, 0);
      image.writeBigUInt64BE(8192n, 4096); // L1[0] -> L2 at 8192
      image.writeBigUInt64BE(entry, 8192); // L2[0]
      const badPath = join(dir, `${name}.qcow`);
      writeFileSync(badPath, image);
      const opened = qcowDriver.open(new MemoryDevice(image), { writable: false });
      assert.throws(() => opened.read(new Uint8Array(512), 0), (e: unknown) => e instanceof ImageError && e.message === 'Input/output error', name);
      const r = runQemu('10.0', ['convert', '-f', 'qcow', '-O', 'raw', badPath, join(dir, 'out.raw')], { timeoutMs: 20_000 });
      assert.match(r.stderr, /error while reading at byte 0: Input\/output error/, name);
    }
  } finally {
    cleanup();
  }
});

test('qcow: AES-encrypted images: info without a key, reads and map with it, refused without it', () => {
  const { dir, cleanup } = tempDir('qcow-aes');
  try {
    const img = join(dir, 'enc.qcow');
    const secret = ['--object', 'secret,id=sec0,data=a long passphrase over 16 bytes'];
    qemuOk('7.2', ['create', '-q', '-f', 'qcow', ...secret, '-o', 'encrypt.format=aes,encrypt.key-secret=sec0', img, '3M']);
    const opts = `driver=qcow,file.filename=${img},encrypt.key-secret=sec0`;
    qemuOk('7.2', [...secret, '--image-opts', '-c', 'write -P 0x61 4k 8k', '-c', 'write -P 0x62 1000k 100k', '-c', 'write -c -P 0x63 2M 4k', opts], 'qemu-io');
    const key = new TextEncoder().encode('a long passphrase over 16 bytes');
    const bytes = readFileSync(img);
    const keyed = qcowDriver.open(new MemoryDevice(bytes), { writable: false, key, keyRequired: true });
    for (const v of VERSIONS) {
      const theirs = JSON.parse(qemuOk(v, ['info', '--output=json', '-f', 'qcow', img]));
      for (const k of ['filename', 'actual-size', 'children']) delete theirs[k];
      assert.deepEqual(keyed.info(), theirs, `info vs ${v}`);
      const out = join(dir, `out-${v}.raw`);
      qemuOk(v, ['convert', ...secret, '--image-opts', opts, '-O', 'raw', out]);
      assert.equal(hashImage(keyed), createHash('sha256').update(readFileSync(out)).digest('hex'), `bytes vs convert (${v})`);
      const map = JSON.parse(qemuOk(v, ['map', '--output=json', ...secret, '--image-opts', opts])) as MapEntry[];
      assert.deepEqual(ourMap(keyed, v !== '7.2'), map, `map vs ${v}`);
    }
    const keyless = qcowDriver.open(new MemoryDevice(bytes), { writable: false });
    assert.equal(keyless.info().encrypted, true);
    assert.throws(() => keyless.read(new Uint8Array(512), 0), /Parameter 'encrypt.key-secret' is required for cipher/);
    assert.throws(() => qcowDriver.open(new MemoryDevice(bytes), { writable: false, keyRequired: true }), /Parameter 'encrypt.key-secret' is required for cipher/);
  } finally {
    cleanup();
  }
});
