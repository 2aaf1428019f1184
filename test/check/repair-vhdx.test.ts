// check -r on VHDX images with a log to replay, against qemu-img 7.2 and 10.0: the same output and
// exit status, and the same repaired file (but for the GUIDs qemu draws at random and the header
// checksums over them), which qemu-img then checks, compares and describes alike. Hostile logs
// end in a clear error without a write; every prefix of the replay's writes leaves an image qemu
// still repairs to the same contents.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { VERSIONS, runQemu } from '../helpers/oracles.ts';
import { LONG } from '../helpers/long.ts';
import { FdDevice } from '../../src/io/fd-device.ts';
import { readHeaders } from '../../src/formats/vhdx/headers.ts';
import { checkLog } from '../../src/formats/vhdx/log.ts';
import { planLogReplay } from '../../src/formats/vhdx/log-replay.ts';
import { applyRepair, writeCount } from '../../src/formats/repair.ts';
import { HEADERS, MiB, patchHeaders, view } from '../formats/vhdx/vhdx-bytes.ts';
import { descriptorAt, logOffset, patchEntry, sealEntry, writeLogEntry } from './vhdx-log-bytes.ts';
import { assertSameRun, type RepairRun } from './repair-harness.ts';
import { RepairDirs } from './fast-dirs.ts';

const dirs = new RepairDirs();
let base: Uint8Array;

before(() => {
  const path = join(dirs.root, 'base.vhdx');
  assert.equal(runQemu('7.2', ['create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', path, '20M']).status, 0);
  assert.equal(runQemu('7.2', ['-f', 'vhdx', '-c', 'write -P 0x11 2M 1M', '-c', 'write -P 0x22 7M 64k', path], {}, 'qemu-io').status, 0);
  base = new Uint8Array(readFileSync(path));
});
after(() => dirs.remove());

function dirty(edit: (b: Uint8Array) => void): Uint8Array {
  const b = base.slice();
  edit(b);
  return b;
}

/** The two repaired files agree but for each header's checksum and its file/data write GUIDs. */
function assertSameReplay(r: RepairRun, label: string): void {
  const mask = (f: Buffer) => {
    const b = Buffer.from(f);
    for (const at of HEADERS) {
      b.fill(0, at + 4, at + 8);
      b.fill(0, at + 16, at + 48);
    }
    return b;
  };
  assert.equal(r.instarFile.length, r.qemuFile.length, `${label}: file size`);
  assert.ok(mask(r.instarFile).equals(mask(r.qemuFile)), `${label}: repaired files differ beyond the random GUIDs`);
  const check = runQemu('10.0', ['check', r.instarPath]);
  assert.equal(check.status, 0, `${label}: qemu-img check of instar's repair: ${check.stdout}${check.stderr}`);
  const compare = runQemu('7.2', ['compare', r.qemuPath, r.instarPath]);
  assert.equal(compare.stdout, 'Images are identical.\n', `${label}: compare`);
  const info = (p: string) => runQemu('10.0', ['info', '--output=json', p]).stdout.split(p).join('x');
  assert.equal(info(r.instarPath), info(r.qemuPath), `${label}: info`);
}

/** Adds a second one-descriptor entry right after the first (two sectors), its data sector at `target`. */
function appendEntry(b: Uint8Array, sequence: bigint, target: number): void {
  const scratch = base.slice();
  writeLogEntry(scratch, { sequence });
  patchEntry(scratch, (v, at) => v.setBigUint64(at + descriptorAt(0) + 16, BigInt(target), true));
  const at = logOffset(b);
  b.set(scratch.subarray(at, at + 8192), at + 8192);
}

const LOGS: Record<string, (b: Uint8Array) => void> = {
  'one data sector': (b) => writeLogEntry(b),
  'two data sectors, sequence 7': (b) => writeLogEntry(b, { descriptors: 2, sequence: 7n }),
  '126 descriptors': (b) => writeLogEntry(b, { descriptors: 126 }),
  'a zero descriptor over data': (b) => {
    writeLogEntry(b, { descriptors: 2 });
    patchEntry(b, (v, at) => {
      b.set(new TextEncoder().encode('zero'), at + descriptorAt(1));
      v.setBigUint64(at + descriptorAt(1) + 8, 3n * 4096n, true);
    });
  },
  'two entries in sequence': (b) => {
    writeLogEntry(b, { sequence: 4n });
    appendEntry(b, 5n, 7 * MiB);
  },
  'two sequences: the one starting higher is replayed': (b) => {
    writeLogEntry(b, { sequence: 4n });
    appendEntry(b, 9n, 7 * MiB);
  },
  'the log in the older header only (nothing to replay)': (b) => {
    writeLogEntry(b);
    patchHeaders(b, (v, at) => v.setBigUint64(at + 8, 1000n, true), [0]);
    patchHeaders(b, (v, at) => { v.setBigUint64(at + 8, 1001n, true); b.fill(0, at + 48, at + 64); }, [1]);
  },
};

const LINES = [
  ['check', '-r', 'all', 'x.vhdx'],
  ['check', '-r', 'leaks', '--output=json', 'x.vhdx'],
  ['check', '-q', '-r', 'all', 'x.vhdx'],
];

for (const [n, [label, edit]] of Object.entries(LOGS).entries()) {
  test(`vhdx check -r: ${label}`, () => {
    const bytes = dirty(edit);
    for (const [j, v] of VERSIONS.entries()) {
      for (const [i, args] of LINES.entries()) {
        // The three command lines replay the same log and differ only in how the result is
        // printed: the short tier runs one per log and release, in turn (each line under both
        // releases over the logs); the long tier all three.
        if (!LONG && i !== (2 * n + j) % LINES.length) continue;
        // The sandboxed guest for the first line, in-process for the others.
        const r = dirs.run(v, 'x.vhdx', bytes, args, { sandboxed: i === 0 });
        const name = `${label}, qemu-img ${v} ${args.join(' ')}`;
        assertSameRun(r, name);
        assertSameReplay(r, name);
      }
    }
  });
}

/** Logs qemu replays into places no VHDX writer puts updates: instar refuses them, writing nothing. */
const REFUSED: Record<string, [(b: Uint8Array) => void, RegExp, boolean?]> = {
  'a data sector past the end of the file': [
    (b) => { writeLogEntry(b); patchEntry(b, (v, at) => v.setBigUint64(at + descriptorAt(0) + 16, BigInt(b.length + 8192), true)); },
    /an entry writes past the end of the file/],
  'a data sector over header 1': [
    (b) => { writeLogEntry(b); patchEntry(b, (v, at) => v.setBigUint64(at + descriptorAt(0) + 16, 64n * 1024n, true)); },
    /an entry writes into the header section/],
  'a data sector over the log': [
    (b) => { writeLogEntry(b); patchEntry(b, (v, at) => v.setBigUint64(at + descriptorAt(0) + 16, BigInt(logOffset(b) + 4096), true)); },
    /an entry writes over the log itself/],
  'a zero descriptor of a petabyte': [
    (b) => {
      writeLogEntry(b);
      patchEntry(b, (v, at) => { b.set(new TextEncoder().encode('zero'), at + descriptorAt(0)); v.setBigUint64(at + descriptorAt(0) + 8, 2n ** 50n, true); });
    },
    /an entry writes past the end of the file/, true],
  'an entry that grows the file': [
    (b) => { writeLogEntry(b); patchEntry(b, (v, at) => v.setBigUint64(at + 56, BigInt(b.length + 5000), true)); },
    /it would grow the file to \d+ bytes/],
};

for (const [n, [label, [edit, message, unbounded]]] of Object.entries(REFUSED).entries()) {
  test(`vhdx check -r refuses ${label}, writing nothing`, () => {
    const bytes = dirty(edit);
    // qemu would write a petabyte of zeros, one synced 4 KiB sector at a time: not run here.
    // The refusal crosses the sandbox's protocol as any error does: the short tier runs the
    // first one through the guest and the rest in-process; the long tier all through the guest.
    const r = dirs.run('10.0', 'x.vhdx', bytes, ['check', '-r', 'all', 'x.vhdx'], { sandboxed: LONG || n === 0, skipQemu: unbounded });
    assert.equal(r.instar.status, 1);
    assert.equal(r.instar.stdout, '');
    assert.match(r.instar.stderr, /^qemu-img: Could not open 'x\.vhdx': instar refuses to replay this VHDX log: .*\n$/);
    assert.match(r.instar.stderr, message);
    assert.ok(r.instarFile.equals(Buffer.from(bytes)), 'the file is unchanged');
    // qemu does replay it (the difference is deliberate).
    if (!unbounded) assert.equal(r.qemu.status, 0, r.qemu.stderr);
  });
}

/** Logs qemu fails to flush: the same error, and instar writes nothing (qemu bumps the headers first). */
const FAILING: Record<string, (b: Uint8Array) => void> = {
  'an entry flushed at a larger file size': (b) => { writeLogEntry(b); patchEntry(b, (v, at) => v.setBigUint64(at + 48, BigInt(b.length + 1), true)); },
  'a data sector of another sequence number': (b) => {
    writeLogEntry(b);
    const at = logOffset(b) + 4096;
    view(b).setUint32(at + 4092, 99, true);
    sealEntry(b);
  },
  // A log as long as a header allows, over the other regions: qemu fails it after a full scan.
  'a 4 GiB log': (b) => {
    writeLogEntry(b);
    patchHeaders(b, (v, at) => v.setUint32(at + 68, 4095 * MiB, true));
  },
};

for (const [n, [label, edit]] of Object.entries(FAILING).entries()) {
  test(`vhdx check -r: ${label} fails as in qemu, writing nothing`, () => {
    const bytes = dirty(edit);
    for (const [j, v] of VERSIONS.entries()) {
      // The two releases fail these alike: the short tier runs each log under one of them, in
      // turn (the 4 GiB log under both); the long tier all under both.
      if (!LONG && label !== 'a 4 GiB log' && j !== n % 2) continue;
      const started = Date.now();
      const r = dirs.run(v, 'x.vhdx', bytes, ['check', '-r', 'all', 'x.vhdx'], { sandboxed: v === '10.0' });
      assertSameRun(r, `${label} (${v})`);
      assert.notEqual(r.instar.status, 0);
      assert.ok(r.instarFile.equals(Buffer.from(bytes)), 'the file is unchanged');
      assert.ok(Date.now() - started < 60_000, 'bounded time');
    }
  });
}

test('vhdx log replay: every prefix of its writes leaves an image qemu repairs to the same contents', () => {
  const bytes = dirty((b) => writeLogEntry(b, { descriptors: 2, sequence: 3n }));
  const full = dirs.run('10.0', 'x.vhdx', bytes, ['check', '-r', 'all', 'x.vhdx']);
  assert.equal(full.qemu.status, 0);
  const path = join(dirs.root, 'prefix.vhdx');
  writeFileSync(path, bytes);
  const plan = (() => {
    const fd = openSync(path, 'r');
    try {
      const dev = new FdDevice(fd, false);
      const pair = readHeaders(dev);
      const sequence = checkLog(dev, pair.header, { writable: true });
      assert.ok(sequence);
      return { pair, sequence };
    } finally {
      closeSync(fd);
    }
  })();
  let total = -1;
  for (let n = 0; total < 0 || n <= total; n++) {
    writeFileSync(path, bytes);
    const fd = openSync(path, 'r+');
    try {
      const dev = new FdDevice(fd, true);
      const steps = planLogReplay(dev, plan.pair, plan.sequence);
      total = writeCount(steps);
      applyRepair(dev, steps, { stopAfterWrites: n });
    } finally {
      closeSync(fd);
    }
    for (const v of VERSIONS) {
      const copy = `${path}.${v}`;
      writeFileSync(copy, readFileSync(path));
      const r = runQemu(v, ['check', '-r', 'all', copy]);
      assert.equal(r.status, 0, `after ${n} of ${total} writes, qemu-img ${v} check -r all: ${r.stdout}${r.stderr}`);
      assert.equal(runQemu(v, ['compare', full.qemuPath, copy]).stdout, 'Images are identical.\n', `after ${n} writes (${v})`);
    }
  }
  assert.equal(total, 6, 'two header writes, two data sectors, two header writes');
});
