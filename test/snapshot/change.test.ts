// snapshot -c/-d/-a on qcow2 against both oracles: the same sequence of creates, applies and
// deletes (with guest writes between them) runs on two copies of an image, one through qemu-img,
// one through instar; after every step the files must be byte-identical except for the dates
// of snapshots each tool stamped itself, and the messages and exit statuses the same.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runQemu, type OracleVersion } from '../helpers/oracles.ts';
import { PairDirs, assertSameOutput, buildImage, maskSnapshotDates, type Session } from './harness.ts';

const dirs = new PairDirs();
const images: Record<string, Uint8Array> = {};
const WRITES = ['write -P 1 0 64k', 'write -P 2 1M 128k', 'write -z 2M 64k'];

before(() => {
  images.v3 = buildImage(dirs.root, 'v3.qcow2', ['-f', 'qcow2', '4M'], WRITES);
  images.small = buildImage(dirs.root, 'small.qcow2', ['-f', 'qcow2', '-o', 'cluster_size=512,refcount_bits=64', '4M'], WRITES);
  // The file ends where its refcount blocks' coverage ends (64 clusters each): a snapshot's new
  // clusters need a new refcount block, allocated as qemu's alloc_refcount_block does.
  images.edge = buildImage(dirs.root, 'edge.qcow2', ['-f', 'qcow2', '-o', 'cluster_size=512,refcount_bits=64', '1M'], ['write -P 9 0 29k']);
  images.extended = buildImage(dirs.root, 'extended.qcow2', ['-f', 'qcow2', '-o', 'extended_l2=on,cluster_size=16384', '4M'], [...WRITES, 'write -P 6 100k 1k']);
  images.wide = buildImage(dirs.root, 'wide.qcow2', ['-f', 'qcow2', '-o', 'cluster_size=2048,refcount_bits=8', '4M'], WRITES);
  // A version 2 image whose data is compressed (compressed clusters are counted per host cluster).
  const plain = join(dirs.root, 'plain.qcow2');
  writeFileSync(plain, images.v3);
  const compressed = join(dirs.root, 'compressed.qcow2');
  assert.equal(runQemu('7.2', ['convert', '-c', '-O', 'qcow2', '-o', 'compat=0.10,cluster_size=4096', plain, compressed]).status, 0);
  images.compressed = new Uint8Array(readFileSync(compressed));
});
after(() => dirs.remove());

/** Dates in a listing: each tool lists the time it stamped itself. */
const DATE = /\d{4}-\d\d-\d\d \d\d:\d\d:\d\d/g;

async function step(s: Session, args: string[], what: string, sandboxed = false): Promise<void> {
  const r = await s(['snapshot', ...args, 'img.qcow2'], { sandboxed });
  r.qemu.stdout = r.qemu.stdout.replace(DATE, 'DATE');
  r.instar.stdout = r.instar.stdout.replace(DATE, 'DATE');
  assertSameOutput(r, what);
  assert.ok(maskSnapshotDates(r.instarFile).equals(maskSnapshotDates(r.qemuFile)), `${what}: instar's file differs from qemu-img's`);
}

/** Creates, applies and deletes as a user would, with guest writes in between. */
async function sequence(version: OracleVersion, image: Uint8Array, label: string, full = true, io = ['write -P 3 0 64k', 'write -P 4 3M 64k', 'discard 1M 64k']): Promise<void> {
  const s = dirs.session(version, { 'img.qcow2': image }, 'img.qcow2');
  const at = (args: string[]) => `${label} ${version} snapshot ${args.join(' ')}`;
  // The first step runs through the real sandbox; the rest in-process (the same op code).
  await step(s, ['-c', 'one'], at(['-c', 'one']), true);
  for (const args of [['-c', 'two'], ['-l']]) await step(s, args, at(args));
  s.io(io);
  const rest = full
    ? [['-c', 'three'], ['-a', 'one'], ['-d', 'two'], ['-a', '3'], ['-c', 'three'], ['-d', 'three'], ['-d', 'one'], ['-l']]
    : [['-a', 'one'], ['-d', 'two'], ['-d', 'one']];
  for (const args of rest) await step(s, args, at(args));
  if (full) {
    s.io(['write -P 5 64k 64k']);
    for (const args of [['-a', 'three'], ['-d', 'three'], ['-c', 'x'.repeat(300)], ['-l']]) await step(s, args, at(args));
  }
  const check = runQemu('10.0', ['check', s.paths[1]]);
  assert.equal(check.status, 0, check.stdout + check.stderr);
}

test('create, apply and delete match qemu-img 10.0 byte for byte (64 KiB clusters)', async () => sequence('10.0', images.v3, 'v3'));
test('create, apply and delete match qemu-img 7.2 byte for byte (64 KiB clusters)', async () => sequence('7.2', images.v3, 'v3'));
test('512-byte clusters, 64-bit refcounts (multi-cluster L1 copies and tables)', async () => sequence('10.0', images.small, 'small', false));
test('a new refcount block for the snapshot\'s clusters', async () => sequence('10.0', images.edge, 'edge', false, ['write -P 3 0 4k', 'write -P 4 900k 8k', 'discard 8k 4k']));
test('extended L2 entries (16 KiB clusters, 512-byte subclusters)', async () => sequence('7.2', images.extended, 'extended', false));
test('2 KiB clusters, 8-bit refcounts', async () => sequence('7.2', images.wide, 'wide', false));
test('a version 2 image with compressed clusters', async () => sequence('10.0', images.compressed, 'compressed', false));

test('messages: unknown snapshots, duplicate names, -U, --image-opts, ids and names', async () => {
  for (const v of ['7.2', '10.0'] as const) {
    const s = dirs.session(v, { 'img.qcow2': images.v3 }, 'img.qcow2');
    for (const args of [['-d', 'nope'], ['-a', 'nope'], ['-c', 'same'], ['-c', 'same'], ['-c', '1'], ['-d', '1'], ['-a', '2'], ['-U', '-c', 'x'], ['-U', '-d', 'same']]) {
      await step(s, args, `${v} snapshot ${args.join(' ')}`);
    }
    const r = await s(['snapshot', '-q', '-c', 'opts', '--image-opts', 'driver=qcow2,file.filename=img.qcow2']);
    assertSameOutput(r, `${v} --image-opts`);
    assert.ok(maskSnapshotDates(r.instarFile).equals(maskSnapshotDates(r.qemuFile)));
  }
});

test('an image with the corrupt bit is refused as qemu refuses it; a dirty one is repaired at open first, as qemu does', async () => {
  const corrupt = Buffer.from(images.v3);
  corrupt[79] |= 2;
  for (const v of ['7.2', '10.0'] as const) {
    const r = await dirs.run(v, { 'img.qcow2': corrupt }, 'img.qcow2', ['snapshot', '-c', 'x', 'img.qcow2']);
    assertSameOutput(r, `${v} corrupt`);
    assert.ok(r.instarFile.equals(corrupt));
  }
  const dirty = Buffer.from(images.v3);
  dirty[79] |= 1;
  const r = await dirs.run('10.0', { 'img.qcow2': dirty }, 'img.qcow2', ['snapshot', '-c', 'x', 'img.qcow2']);
  assertSameOutput(r, '10.0 dirty');
  assert.equal(r.instar.status, 0);
  assert.ok(maskSnapshotDates(r.instarFile).equals(maskSnapshotDates(r.qemuFile)), 'the same file as qemu\'s, dates aside');
});

test('a refcount that would overflow (1-bit refcounts): qemu\'s message, and what qemu wrote before failing', async () => {
  const image = buildImage(dirs.root, 'narrow.qcow2', ['-f', 'qcow2', '-o', 'cluster_size=4096,refcount_bits=1', '1M'], ['write 0 4k']);
  for (const v of ['7.2', '10.0'] as const) {
    const r = await dirs.run(v, { 'img.qcow2': image }, 'img.qcow2', ['snapshot', '-c', 'x', 'img.qcow2']);
    assertSameOutput(r, `${v} 1-bit refcounts`);
    assert.ok(r.instarFile.equals(r.qemuFile), 'the same leaked L1 copy and refcounts as qemu');
    assert.ok(!r.instarFile.equals(Buffer.from(image)), 'qemu changed the file before failing');
  }
});

test('an encrypted image (its key given): the snapshot metadata is plain, as qemu writes it', async () => {
  const file = join(dirs.root, 'enc.qcow2');
  const secret = ['--object', 'secret,id=s,data=abc'];
  assert.equal(runQemu('10.0', ['create', '-q', '-f', 'qcow2', ...secret, '-o', 'encrypt.format=luks,encrypt.key-secret=s,encrypt.iter-time=10', file, '1M']).status, 0);
  const opts = 'driver=qcow2,file.filename=img.qcow2,encrypt.key-secret=s';
  for (const v of ['7.2', '10.0'] as const) {
    const s = dirs.session(v, { 'img.qcow2': readFileSync(file) }, 'img.qcow2');
    for (const args of [['-c', 'one'], ['-c', 'two'], ['-a', 'one'], ['-d', 'one']]) {
      const r = await s(['snapshot', ...secret, ...args, '--image-opts', opts]);
      assertSameOutput(r, `${v} encrypted ${args.join(' ')}`);
      assert.ok(maskSnapshotDates(r.instarFile).equals(maskSnapshotDates(r.qemuFile)), `${v} encrypted ${args.join(' ')}`);
    }
    const noKey = await s(['snapshot', '-c', 'x', 'img.qcow2']);
    assertSameOutput(noKey, `${v} encrypted without its key`);
  }
});
