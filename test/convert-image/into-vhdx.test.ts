// convert -n into an existing VHDX against qemu-img 7.2 and 10.0: each tool writes into its own
// copy of the same image. qemu draws GUIDs at random (the session's file write GUID and the data
// write GUIDs in the headers, a log GUID per BAT change in the headers and in each log entry), so
// the CLI runs compare the files with those GUIDs and the checksums over them masked, every other
// byte exact (sequence numbers, log entries, BAT, data); one run then takes qemu's GUIDs and must
// give qemu's file byte for byte. Hostile BATs are refused with nothing written; every prefix of
// the writes leaves an image qemu-img repairs (replaying the log) and opens.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { scratch, qemu, type Scratch } from './harness.ts';
import { runInto, sameInto, sourceDisk } from './into-harness.ts';
import { everyPrefixOpens, runStopped } from './into-crash.ts';
import { HEADERS, batRegion, patchHeaders, writeLogEntry } from '../formats/vhdx/vhdx-bytes.ts';
import type { VhdxGuidSource } from '../../src/formats/vhdx/inplace.ts';

let s: Scratch;
const at = (name: string) => join(s.dir, name);
const MiB = 1024 * 1024;
const SECTOR = 4096;
const qcow2Source = ['-f', 'qcow2', '../src.qcow2'];

/** The current header's log region. */
function logRegion(file: Buffer): { offset: number; length: number } {
  const current = HEADERS.reduce((a, b) => (file.readBigUInt64LE(b + 8) > file.readBigUInt64LE(a + 8) ? b : a));
  return { offset: Number(file.readBigUInt64LE(current + 72)), length: file.readUInt32LE(current + 68) };
}

/** The log entries' headers in the log region, by position. */
function logEntries(file: Buffer): number[] {
  const { offset, length } = logRegion(file);
  const found: number[] = [];
  for (let pos = offset; pos < offset + length; pos += SECTOR) if (file.toString('latin1', pos, pos + 4) === 'loge') found.push(pos);
  return found;
}

/** The file with qemu's random GUIDs and the checksums over them zeroed. */
function maskGuids(file: Buffer): Buffer {
  const out = Buffer.from(file);
  for (const h of HEADERS) {
    out.fill(0, h + 4, h + 8);
    out.fill(0, h + 16, h + 64);
  }
  for (const entry of logEntries(file)) {
    out.fill(0, entry + 4, entry + 8);
    out.fill(0, entry + 32, entry + 48);
  }
  return out;
}

before(() => {
  s = scratch();
  const disk = sourceDisk(11);
  writeFileSync(at('src.raw'), disk);
  // 140 MiB of zeros with 4 KiB of data in each MiB: more BAT changes than a 1 MiB log holds.
  const sparse = Buffer.alloc(140 * MiB);
  for (let m = 0; m < 140; m++) sparse.fill(m + 1, m * MiB + 8192, m * MiB + 12288);
  writeFileSync(at('wrap.raw'), sparse);
  qemu(['create', '-q', '-f', 'qcow2', at('src.qcow2'), '3M']);
  qemu(['-f', 'qcow2', '-c', 'write -P 0x11 0 64k', '-c', 'write -P 0 1M 64k', '-c', 'write -z 2M 64k', '-c', 'write -P 5 2500k 4k', at('src.qcow2')], undefined, '10.0', 'qemu-io');
  qemu(['create', '-q', '-f', 'vhdx', at('empty.vhdx'), '4M']);
  // 1 MiB blocks, some present (data where the sources have zeros, data past their end).
  qemu(['create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', at('part.vhdx'), '6M']);
  qemu(['-f', 'vhdx', '-c', 'write -P 0x22 1M 100k', '-c', 'write -P 0x33 5M 64k', at('part.vhdx')], undefined, '10.0', 'qemu-io');
  qemu(['create', '-q', '-f', 'vhdx', '-o', 'block_size=1M,block_state_zero=off', at('nonzero.vhdx'), '4M']);
  qemu(['create', '-q', '-f', 'vhdx', '-o', 'subformat=fixed,block_size=1M', at('fixed.vhdx'), '4M']);
  qemu(['create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', at('small.vhdx'), '2M']);
  qemu(['create', '-q', '-f', 'vhdx', '-o', 'block_size=1M,log_size=1M', at('wrap.vhdx'), '140M']);
  // A log entry (sequence 3, two data sectors) left to replay.
  const dirty = new Uint8Array(readFileSync(at('part.vhdx')));
  writeLogEntry(dirty, { descriptors: 2, sequence: 3n });
  writeFileSync(at('dirty.vhdx'), dirty);
});
after(() => s.cleanup());

test('convert -n into a VHDX (sandboxed): blocks allocated through the log, the zeros too, the headers updated', async () => {
  for (const name of ['empty.vhdx', 'part.vhdx']) {
    const runs = await sameInto(s.dir, name, name, ['-n', '-O', 'vhdx', ...qcow2Source, name], true, maskGuids);
    for (const r of runs) assert.ok(r.result.status === 0 && logEntries(r.target).length > 0, `${name}: no block was allocated`);
  }
});

test('convert -n into a VHDX: a raw source, -S 0, --target-is-zero, --target-image-opts with -p, blocks not zero, a fixed VHDX', async () => {
  await sameInto(s.dir, 'raw', 'part.vhdx', ['-n', '-O', 'vhdx', '-f', 'raw', '../src.raw', 'part.vhdx'], false, maskGuids);
  await sameInto(s.dir, 'S0', 'part.vhdx', ['-n', '-O', 'vhdx', '-S', '0', ...qcow2Source, 'part.vhdx'], false, maskGuids);
  await sameInto(s.dir, 'is-zero', 'part.vhdx', ['-n', '-O', 'vhdx', '--target-is-zero', ...qcow2Source, 'part.vhdx'], false, maskGuids);
  await sameInto(s.dir, 'opts', 'part.vhdx', ['-n', '-p', '--target-image-opts', '-f', 'raw', '../src.raw', 'driver=vhdx,file.filename=part.vhdx'], false, maskGuids);
  await sameInto(s.dir, 'nonzero', 'nonzero.vhdx', ['-n', '-O', 'vhdx', ...qcow2Source, 'nonzero.vhdx'], false, maskGuids);
  await sameInto(s.dir, 'fixed', 'fixed.vhdx', ['-n', '-O', 'vhdx', ...qcow2Source, 'fixed.vhdx'], false, maskGuids);
});

test('convert -n into a VHDX with a log to replay: replayed at open, then written as qemu does (its log numbering goes on)', async () => {
  const [ours] = await sameInto(s.dir, 'dirty', 'dirty.vhdx', ['-n', '-O', 'vhdx', '-f', 'raw', '../src.raw', 'dirty.vhdx'], false, maskGuids);
  assert.equal(ours.target.readBigUInt64LE(logEntries(ours.target)[0] + 16), 4n, 'the first new entry follows the replayed one');
});

test('convert -n into a VHDX: more BAT changes than its log holds (the log wraps)', async () => {
  const [ours] = await sameInto(s.dir, 'wrap', 'wrap.vhdx', ['-n', '-O', 'vhdx', '--target-is-zero', '-f', 'raw', '../wrap.raw', 'wrap.vhdx'], false, maskGuids);
  assert.equal(logEntries(ours.target).length, 128, 'a full 1 MiB log of 8 KiB entries');
});

test('convert -n into a VHDX with qemu\'s GUIDs gives qemu\'s file byte for byte', async () => {
  const theirs = await runInto(s.dir, '10.0', '10.0', 'exact', 'part.vhdx', ['-n', '-O', 'vhdx', '-f', 'raw', '../src.raw', 'part.vhdx']);
  assert.equal(theirs.result.status, 0, theirs.result.stderr);
  const t = theirs.target;
  const guid = (pos: number) => Uint8Array.from(t.subarray(pos, pos + 16));
  // The first update goes to the header that was not current (the second, qemu-made images have it current).
  const original = readFileSync(at('part.vhdx'));
  const first = original.readBigUInt64LE(HEADERS[1] + 8) > original.readBigUInt64LE(HEADERS[0] + 8) ? 0 : 1;
  const dataGuids = [guid(HEADERS[first] + 32), guid(HEADERS[first ^ 1] + 32)];
  const logGuids = logEntries(t).map((e) => guid(e + 32));
  assert.equal(logGuids.length, 2);
  const guids = (): VhdxGuidSource => {
    let d = 0;
    let l = 0;
    return { session: () => guid(HEADERS[0] + 16), dataWrite: () => dataGuids[d++], log: () => logGuids[l++] };
  };
  const ours = runStopped({ source: at('src.raw'), target: at('part.vhdx'), format: 'vhdx', dir: s.dir, label: 'exact', options: { vhdxGuids: guids() } }, at('exact-op'), Infinity);
  assert.ok(readFileSync(ours).equals(t), 'the file differs from qemu-img\'s');
});

test('convert -n into a VHDX smaller than the source, or with -c: qemu\'s messages, nothing written', async () => {
  for (const [label, args] of [['smaller', [...qcow2Source]], ['compress', ['-c', '-f', 'raw', '../src.raw']]] as const) {
    const target = label === 'smaller' ? 'small.vhdx' : 'part.vhdx';
    const [ours] = await sameInto(s.dir, label, target, ['-n', '-O', 'vhdx', ...args, target]);
    assert.equal(ours.result.status, 1, label);
    assert.ok(ours.target.equals(readFileSync(at(target))), `${label}: the target was written`);
  }
});

test('convert -n into a VHDX with hostile blocks, or a log GUID without a log: refused in one line, nothing written', async () => {
  const hostile = (name: string, edit: (f: Buffer) => void) => {
    const f = readFileSync(at('part.vhdx'));
    edit(f);
    writeFileSync(at(name), f);
  };
  // part.vhdx has blocks 1 and 5 present: block 5 moved onto block 1; block 1 moved into the header section.
  const entry = (f: Buffer, block: number) => batRegion(f).offset + block * 8;
  hostile('overlap.vhdx', (f) => f.writeBigUInt64LE(f.readBigUInt64LE(entry(f, 1)), entry(f, 5)));
  hostile('in-header.vhdx', (f) => f.writeBigUInt64LE(6n, entry(f, 1)));
  hostile('partial.vhdx', (f) => f.writeBigUInt64LE(f.readBigUInt64LE(entry(f, 1)) | 7n, entry(f, 1)));
  hostile('log-guid.vhdx', (f) => patchHeaders(f, (v, h) => v.setUint8(h + 48, 1)));
  const cases: [string, string][] = [
    ['overlap.vhdx', 'instar cannot convert into this vhdx image (its block 5 overlaps its block 1); nothing was written'],
    ['in-header.vhdx', 'instar cannot convert into this vhdx image (block 1 lies outside its data area); nothing was written'],
    ['partial.vhdx', 'instar cannot convert into this vhdx image (block 1 has state 7, which qemu cannot write); nothing was written'],
    ['log-guid.vhdx', 'instar cannot convert into this vhdx image (its header names a log); nothing was written'],
  ];
  for (const [name, message] of cases) {
    const ours = await runInto(s.dir, 'instar', '10.0', `refused-${name}`, name, ['-n', '-O', 'vhdx', ...qcow2Source, name]);
    assert.deepEqual([ours.result.status, ours.result.stderr], [1, `qemu-img: ${message}\n`], name);
    assert.ok(ours.target.equals(readFileSync(at(name))), `${name}: the target was written`);
  }
});

test('convert -n into a VHDX stopped after each prefix of its writes leaves an image qemu-img repairs and opens', () => {
  const fixed = (byte: number) => () => new Uint8Array(16).fill(byte);
  // Fresh GUIDs for each run, the same in every run (the runs must end alike).
  const options = () => {
    let n = 0;
    return { vhdxGuids: { session: fixed(1), dataWrite: fixed(2), log: () => new Uint8Array(16).fill(16 + n++) } };
  };
  const k = everyPrefixOpens({ source: at('src.raw'), target: at('part.vhdx'), format: 'vhdx', dir: s.dir, label: 'vhdx', options, replay: true });
  assert.ok(k > 10, `${k} writes`);
});
