// convert -n --target-image-opts into raw and qcow2 targets against qemu-img 7.2 and 10.0: the
// option string parsed as --image-opts parses a source (driver=raw, driver=file, driver=qcow2, no
// driver: the format probed), its failures worded as qemu words them when it opens the target
// (after the sources), and what instar does not implement refused with nothing written.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { scratch, qemu, type Scratch } from './harness.ts';
import { runInto, sameInto } from './into-harness.ts';
import { prng } from '../helpers/xorshift.ts';

let s: Scratch;
const at = (name: string) => join(s.dir, name);
const MiB = 1024 * 1024;
const opts = (...args: string[]) => ['-n', '--target-image-opts', ...args];
const qcow2Source = ['-f', 'qcow2', '../src.qcow2'];

before(() => {
  s = scratch();
  // The raw target holds data everywhere: what the copy leaves as zeros must become zeros.
  const next = prng(11);
  writeFileSync(at('t.raw'), Buffer.from(Array.from({ length: 4 * MiB }, () => next() & 0xff)));
  qemu(['create', '-q', '-f', 'qcow2', at('src.qcow2'), '3M']);
  qemu(['-f', 'qcow2', '-c', 'write -P 0x11 0 64k', '-c', 'write -P 0 1M 64k', '-c', 'write -z 2M 64k', '-c', 'write -P 5 2500k 4k', at('src.qcow2')], undefined, '10.0', 'qemu-io');
  qemu(['create', '-q', '-f', 'qcow2', '-b', 'src.qcow2', '-F', 'qcow2', at('over.qcow2')]);
  qemu(['create', '-q', '-f', 'qcow2', at('t.qcow2'), '4M']);
  qemu(['-f', 'qcow2', '-c', 'write -P 0x22 0 1M', '-c', 'write -P 0x33 3M 64k', at('t.qcow2')], undefined, '10.0', 'qemu-io');
});
after(() => s.cleanup());

test('convert -n --target-image-opts into raw (sandboxed): driver=raw, driver=file, -p', async () => {
  await sameInto(s.dir, 'raw', 't.raw', opts(...qcow2Source, 'driver=raw,file.filename=t.raw'), true);
  await sameInto(s.dir, 'file', 't.raw', opts(...qcow2Source, 'driver=file,filename=t.raw'));
  await sameInto(s.dir, 'raw-p', 't.raw', opts('-p', ...qcow2Source, 'driver=raw,file.filename=t.raw'));
});

test('convert -n --target-image-opts into qcow2: driver=qcow2, the format probed without driver=, -p', async () => {
  await sameInto(s.dir, 'qcow2', 't.qcow2', opts(...qcow2Source, 'driver=qcow2,file.filename=t.qcow2'));
  await sameInto(s.dir, 'probed', 't.qcow2', opts(...qcow2Source, 'file.filename=t.qcow2'));
  await sameInto(s.dir, 'qcow2-p', 't.qcow2', opts('-p', ...qcow2Source, 'driver=qcow2,file.filename=t.qcow2'));
});

test('convert -n -B with --target-is-zero: qemu\'s message, nothing written, and yet status 0 (and 100% with -p)', async () => {
  for (const [label, target, args] of [
    ['B-raw', 't.raw', ['-n', '-p', '-B', 'base', '--target-is-zero', ...qcow2Source, 't.raw']],
    ['B-qcow2', 't.qcow2', opts('-B', 'base', '--target-is-zero', ...qcow2Source, 'driver=qcow2,file.filename=t.qcow2')],
  ] as const) {
    const [ours] = await sameInto(s.dir, label, target, [...args]);
    assert.equal(ours.result.status, 0, label);
    assert.ok(ours.target.equals(readFileSync(at(target))), `${label}: the target was written`);
  }
});

test('convert -n --target-image-opts, qemu\'s failures: nothing written', async () => {
  const cases: [string, string, string[]][] = [
    ['raw-missing', 't.raw', opts(...qcow2Source, 'driver=raw,file.filename=gone.raw')],
    ['qcow2-missing', 't.qcow2', opts(...qcow2Source, 'driver=qcow2,file.filename=gone.qcow2')],
    ['plain-name', 't.raw', opts(...qcow2Source, 't.raw')],
    ['with-O', 't.qcow2', ['-n', '-O', 'qcow2', '--target-image-opts', ...qcow2Source, 'driver=qcow2,file.filename=t.qcow2']],
    ['not-qcow2', 't.raw', opts(...qcow2Source, 'driver=qcow2,file.filename=t.raw')],
    ['bad-option', 't.qcow2', opts(...qcow2Source, 'driver=qcow2,file.filename=t.qcow2,foo=bar')],
    // driver=file: the file's own bytes are the disk, smaller than the source's.
    ['file-of-qcow2', 't.qcow2', opts(...qcow2Source, 'driver=file,filename=t.qcow2')],
    ['without-n', 't.qcow2', ['--target-image-opts', ...qcow2Source, 'driver=qcow2,file.filename=t.qcow2']],
  ];
  for (const [label, target, args] of cases) {
    const [ours] = await sameInto(s.dir, label, target, args);
    assert.equal(ours.result.status, 1, label);
    assert.ok(ours.target.equals(readFileSync(at(target))), `${label}: the target was written`);
  }
});

test('convert -n --target-image-opts, what instar refuses (raw offset=, a raw target probed): one line, nothing written', async () => {
  const cases: [string, string, string[], RegExp][] = [
    ['offset', 't.raw', opts(...qcow2Source, 'driver=raw,file.filename=t.raw,offset=512'), /instar does not support the --image-opts option 'offset'/],
    ['probed-raw', 't.raw', opts(...qcow2Source, 'file.filename=t.raw'), /Could not open 'file.filename=t.raw': .*instar/],
  ];
  for (const [label, target, args, message] of cases) {
    const ours = await runInto(s.dir, 'instar', '10.0', label, target, args);
    assert.equal(ours.result.status, 1, label);
    assert.match(ours.result.stderr, message);
    assert.equal(ours.result.stderr.split('\n').length, 2, `${label}: one line`);
    assert.ok(ours.target.equals(readFileSync(at(target))), `${label}: the target was written`);
  }
});

test('convert -n -B into raw: with a source without a backing file it changes nothing; two sources: qemu\'s message; a backed source: refused, nothing written', async () => {
  await sameInto(s.dir, 'B-raw-copy', 't.raw', ['-n', '-B', 'base', ...qcow2Source, 't.raw']);
  const [two] = await sameInto(s.dir, 'B-raw-two', 't.raw', ['-n', '-B', 'base', ...qcow2Source, '../src.qcow2', 't.raw']);
  assert.equal(two.result.status, 1);
  const ours = await runInto(s.dir, 'instar', '10.0', 'B-raw-backed', 't.raw', ['-n', '-B', 'base', '-f', 'qcow2', '../over.qcow2', 't.raw']);
  assert.equal(ours.result.status, 1);
  assert.equal(ours.result.stderr, 'qemu-img: instar cannot convert into an existing raw image (-n) with -B from a source that has a backing file; nothing was written\n');
  assert.ok(ours.target.equals(readFileSync(at('t.raw'))), 'the target was written');
});
