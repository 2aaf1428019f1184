// The header planners (rebase -u for qcow2 and qed, amend for qcow2) over seeded mutations of
// qemu-made images, in-process: whatever the header says, only ImageError escapes, a rebase -u
// plan writes nothing but the header area at offset 0 (never past the file, never a table), an
// amend plan (which may now rewrite a snapshot table or expand zero clusters) writes only inside
// the file as its own truncates leave it, and either leaves an image the driver opens again. (The differential tests compare against qemu-img; this one looks
// for inputs that break the planners' own bounds.)
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runQemu } from '../helpers/oracles.ts';
import { prng } from '../helpers/xorshift.ts';
import { ImageError, type BlockDevice, type HeaderChangePlan, type AmendPlan } from '../../src/formats/types.ts';
import { openQcow2 } from '../../src/formats/qcow2/driver.ts';
import { planChangeBacking } from '../../src/formats/qcow2/rebase-unsafe.ts';
import { qcow2Amend } from '../../src/formats/qcow2/amend.ts';
import { openQed } from '../../src/formats/qed/driver.ts';
import { planQedChangeBacking } from '../../src/formats/qed/rebase-unsafe.ts';
import { applyRepair } from '../../src/formats/repair.ts';

const seeds: Record<string, Buffer> = {};

before(() => {
  const dir = mkdtempSync(join(tmpdir(), 'instar-planner-fuzz-'));
  try {
    const make = (name: string, format: string, opts: string) => {
      const path = join(dir, name);
      assert.equal(runQemu('10.0', ['create', '-q', '-f', format, '-u', '-o', opts, path, '1M']).status, 0);
      seeds[name] = readFileSync(path);
    };
    make('v3.qcow2', 'qcow2', 'backing_file=b.qcow2,backing_fmt=qcow2,lazy_refcounts=on');
    make('v2.qcow2', 'qcow2', 'compat=0.10,cluster_size=4096');
    make('b.qed', 'qed', 'backing_file=b.raw,backing_fmt=raw,cluster_size=4096');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

function memoryDevice(bytes: Buffer): BlockDevice {
  return {
    size: bytes.length,
    read: (buf, pos) => {
      const n = Math.max(0, Math.min(buf.length, bytes.length - pos));
      bytes.copy(buf, 0, pos, pos + n);
      return n;
    },
    write: (buf, pos) => {
      Buffer.from(buf).copy(bytes, pos);
    },
  };
}

/** Flips a few bytes of the header area (the first 1 KiB), where the planners read. */
function mutate(seed: Buffer, next: () => number): Buffer {
  const b = Buffer.from(seed);
  const count = 1 + (next() % 4);
  for (let i = 0; i < count; i++) b[next() % 1024] = next() & 0xff;
  return b;
}

/** Runs `plan` on an image the driver opens; checks its writes stay in the header area. */
function check(bytes: Buffer, open: (dev: BlockDevice) => unknown, plan: (dev: BlockDevice) => HeaderChangePlan | AmendPlan, headerBytes?: (b: Buffer) => number): 'refused' | 'planned' | 'unopenable' {
  const dev = memoryDevice(bytes);
  try {
    open(dev);
  } catch (e) {
    if (e instanceof ImageError) return 'unopenable';
    throw e;
  }
  let p: HeaderChangePlan | AmendPlan;
  try {
    p = plan(dev);
  } catch (e) {
    if (e instanceof ImageError) return 'refused';
    throw e;
  }
  if ('refused' in p) return 'refused';
  // applyRepair refuses (ImageError) any step outside the file before writing; not expected here.
  if (headerBytes === undefined) return apply(bytes, p, open);
  const limit = headerBytes(bytes);
  for (const s of p.steps ?? []) {
    if (s.kind === 'barrier') continue;
    assert.notEqual(s.kind, 'truncate', 'a header plan never changes the file size');
    if (s.kind === 'truncate') continue;
    assert.equal(s.pos, 0, 'a header plan writes at offset 0');
    const length = s.kind === 'write' ? s.bytes.length : s.length;
    assert.ok(length <= limit && length <= bytes.length, `a write of ${length} bytes stays in the header area (${limit})`);
  }
  return apply(bytes, p, open);
}

/** Applies a plan to a growable copy of the image and opens the result. */
function apply(bytes: Buffer, p: Exclude<HeaderChangePlan | AmendPlan, { refused: string }>, open: (dev: BlockDevice) => unknown): 'planned' {
  let image = Buffer.from(bytes);
  const dev: BlockDevice = {
    get size() { return image.length; },
    read: (buf, pos) => memoryDevice(image).read(buf, pos),
    write: (buf, pos) => memoryDevice(image).write!(buf, pos),
    truncate: (size: number) => {
      const next = Buffer.alloc(size);
      image.copy(next, 0, 0, Math.min(size, image.length));
      image = next;
    },
  };
  applyRepair(dev, p.steps ?? []);
  open(memoryDevice(image));
  return 'planned';
}

test('rebase -u and amend planners keep to the header on mutated headers', () => {
  const next = prng(20261127);
  const counts = { refused: 0, planned: 0, unopenable: 0 };
  const qcow2Open = (dev: BlockDevice) => openQcow2(dev, { writable: true, readsData: true });
  const clusterOf = (b: Buffer) => 2 ** b.readUInt32BE(20);
  for (let i = 0; i < 400; i++) {
    const name = i % 3 === 0 ? 'b.qed' : i % 3 === 1 ? 'v3.qcow2' : 'v2.qcow2';
    const bytes = mutate(seeds[name], next);
    let outcome;
    if (name === 'b.qed') {
      outcome = check(bytes, (dev) => openQed(dev, { writable: true }), (dev) => planQedChangeBacking(dev, Buffer.from('n.raw'), Buffer.from('raw')),
        (b) => b.readUInt32LE(4) * b.readUInt32LE(12));
    } else if (i % 2 === 0) {
      outcome = check(bytes, qcow2Open, (dev) => planChangeBacking(dev, Buffer.from('new.qcow2'), Buffer.from('qcow2')), clusterOf);
    } else {
      const values = new Map([['compat', i % 4 === 1 ? '1.1' : '0.10'], ['lazy_refcounts', 'off']]);
      outcome = check(bytes, qcow2Open, (dev) => qcow2Amend.plan(dev, qcow2Open(dev), values));
    }
    counts[outcome]++;
  }
  // The campaign means something only if many mutants open and get planned.
  assert.ok(counts.planned > 100, JSON.stringify(counts));
});
