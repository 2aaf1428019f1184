// Differential: images made by qemu-img at test time; instar's NodeInfo must equal what each
// oracle's `info --output=json` reports (host-filled fields aside), keys in QAPI schema order.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { openSync, writeSync, readSync, closeSync } from 'node:fs';
import { VERSIONS, type OracleVersion } from '../../helpers/oracles.ts';
import { ImageError, type NodeInfo } from '../../../src/formats/types.ts';
import {
  asOracleSees, IMAGE_INFO_ORDER, inSchemaOrder, instarInfo, oracleInfo, qemu, QCOW2_SPECIFIC_ORDER, tempDir,
} from './helpers.ts';

function assertMatchesOracles(path: string, format = 'qcow2'): NodeInfo {
  const node = instarInfo(path, format);
  if (node instanceof ImageError) assert.fail(`instar refused ${path}: ${node.message}`);
  assert.ok(inSchemaOrder(Object.keys(node), IMAGE_INFO_ORDER), `ImageInfo key order: ${Object.keys(node)}`);
  const spec = node['format-specific'];
  if (spec) assert.ok(inSchemaOrder(Object.keys(spec.data), QCOW2_SPECIFIC_ORDER), `qcow2 key order: ${Object.keys(spec.data)}`);
  for (const v of VERSIONS) assert.deepStrictEqual(asOracleSees(v, node), oracleInfo(v, path, format), `oracle ${v}`);
  return node;
}

/** Sets bits in the 64-bit incompatible features field (v3 header offset 72). */
function setIncompatibleBits(path: string, bits: number): void {
  const fd = openSync(path, 'r+');
  const b = Buffer.alloc(8);
  readSync(fd, b, 0, 8, 72);
  b.writeBigUInt64BE(b.readBigUInt64BE(0) | BigInt(bits));
  writeSync(fd, b, 0, 8, 72);
  closeSync(fd);
}

const createCases: [string, OracleVersion, string[]][] = [
  ['compat=0.10', '7.2', ['-o', 'compat=0.10']],
  ['compat=1.1', '7.2', ['-o', 'compat=1.1']],
  ['cluster_size=512', '10.0', ['-o', 'cluster_size=512']],
  ['cluster_size=4k', '7.2', ['-o', 'cluster_size=4k']],
  ['cluster_size=2M', '10.0', ['-o', 'cluster_size=2M']],
  ['refcount_bits=1', '7.2', ['-o', 'refcount_bits=1']],
  ['refcount_bits=2', '10.0', ['-o', 'refcount_bits=2']],
  ['refcount_bits=8', '7.2', ['-o', 'refcount_bits=8']],
  ['refcount_bits=64', '10.0', ['-o', 'refcount_bits=64']],
  ['lazy_refcounts=on', '7.2', ['-o', 'lazy_refcounts=on']],
  ['extended_l2=on', '10.0', ['-o', 'extended_l2=on']],
  ['compression_type=zstd', '10.0', ['-o', 'compression_type=zstd']],
  ['v2 with 4k clusters', '10.0', ['-o', 'compat=0.10,cluster_size=4096']],
];

for (const [name, creator, opts] of createCases) {
  test(`info matches both oracles: ${name}`, (t) => {
    const path = join(tempDir(t), 'img.qcow2');
    qemu(creator, ['create', '-q', '-f', 'qcow2', ...opts, path, '100M']);
    assertMatchesOracles(path);
  });
}

test('info: odd virtual size is reported rounded down to 512 bytes like qemu', (t) => {
  const path = join(tempDir(t), 'odd.qcow2');
  qemu('7.2', ['create', '-q', '-f', 'qcow2', path, '1000001']);
  assertMatchesOracles(path);
});

test('info: backing file and backing format', (t) => {
  const dir = tempDir(t);
  qemu('7.2', ['create', '-q', '-f', 'raw', join(dir, 'base.raw'), '10M']);
  const path = join(dir, 'top.qcow2');
  qemu('10.0', ['create', '-q', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', path]);
  const node = assertMatchesOracles(path);
  assert.equal(node['backing-filename'], 'base.raw');
  assert.equal(node['backing-filename-format'], 'raw');
});

test('info: external data file (always a fresh path), data_file_raw, host sees the name', (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'df.qcow2');
  qemu('7.2', ['create', '-q', '-f', 'qcow2', '-o', `data_file=${join(dir, 'fresh.data')},data_file_raw=on`, path, '10M']);
  const node = assertMatchesOracles(path);
  assert.equal(node['data-file'], join(dir, 'fresh.data'));
});

test('info: internal snapshots (7.2 and 10.0 writers, v2 and v3)', (t) => {
  const dir = tempDir(t);
  for (const compat of ['0.10', '1.1']) {
    const path = join(dir, `snap-${compat}.qcow2`);
    qemu('7.2', ['create', '-q', '-f', 'qcow2', '-o', `compat=${compat}`, path, '10M']);
    qemu('7.2', ['snapshot', '-c', 'first', path]);
    qemu('10.0', ['snapshot', '-c', 'sécond', path]);
    const node = assertMatchesOracles(path);
    assert.equal(node.snapshots?.length, 2);
  }
});

test('info: persistent bitmaps with flags and granularity', (t) => {
  const path = join(tempDir(t), 'bm.qcow2');
  qemu('7.2', ['create', '-q', '-f', 'qcow2', path, '100M']);
  qemu('7.2', ['bitmap', '--add', path, 'b1']);
  qemu('10.0', ['bitmap', '--add', '-g', '512k', path, 'b2']);
  qemu('10.0', ['bitmap', '--disable', path, 'b2']);
  const node = assertMatchesOracles(path);
  assert.equal((node['format-specific']!.data.bitmaps as unknown[]).length, 2);
});

test('info: LUKS-encrypted qcow2 reports the LUKS header', (t) => {
  const path = join(tempDir(t), 'luks.qcow2');
  qemu('10.0', [
    'create', '-q', '-f', 'qcow2', '--object', 'secret,id=s,data=pw',
    '-o', 'encrypt.format=luks,encrypt.key-secret=s,encrypt.iter-time=10', path, '16M',
  ]);
  const node = assertMatchesOracles(path);
  assert.equal(node.encrypted, true);
});

test('info: LUKS with essiv and cbc', (t) => {
  const path = join(tempDir(t), 'essiv.qcow2');
  qemu('10.0', [
    'create', '-q', '-f', 'qcow2', '--object', 'secret,id=s,data=pw',
    '-o', 'encrypt.format=luks,encrypt.key-secret=s,encrypt.iter-time=10,encrypt.cipher-alg=aes-128,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv,encrypt.ivgen-hash-alg=sha256',
    path, '16M',
  ]);
  assertMatchesOracles(path);
});

test('info: legacy AES encryption', (t) => {
  const path = join(tempDir(t), 'aes.qcow2');
  qemu('7.2', ['create', '-q', '-f', 'qcow2', '--object', 'secret,id=s,data=pw', '-o', 'encrypt.format=aes,encrypt.key-secret=s', path, '1M']);
  assertMatchesOracles(path);
});

test('info: dirty and corrupt bits patched into the header', (t) => {
  const path = join(tempDir(t), 'flags.qcow2');
  qemu('7.2', ['create', '-q', '-f', 'qcow2', path, '10M']);
  setIncompatibleBits(path, 1);
  assert.equal(assertMatchesOracles(path)['dirty-flag'], true);
  setIncompatibleBits(path, 2);
  assert.equal(assertMatchesOracles(path)['format-specific']!.data.corrupt, true);
});

test('info: raw file (no format-specific part)', (t) => {
  const path = join(tempDir(t), 'plain.raw');
  qemu('7.2', ['create', '-q', '-f', 'raw', path, '3M']);
  assertMatchesOracles(path, 'raw');
});

for (const [cipher, ivgen] of [['serpent-256', 'essiv'], ['twofish-128', 'essiv'], ['cast5-128', 'plain']]) {
  test(`info: LUKS with ${cipher}, cbc, ${ivgen}, sha512`, (t) => {
    const path = join(tempDir(t), 'cipher.qcow2');
    qemu('10.0', [
      'create', '-q', '-f', 'qcow2', '--object', 'secret,id=s,data=pw',
      '-o', `encrypt.format=luks,encrypt.key-secret=s,encrypt.iter-time=10,encrypt.cipher-alg=${cipher},encrypt.cipher-mode=cbc,encrypt.hash-alg=sha512,encrypt.ivgen-alg=${ivgen},encrypt.ivgen-hash-alg=sha256`,
      path, '1M',
    ]);
    assertMatchesOracles(path);
  });
}
