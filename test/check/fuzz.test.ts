// The check op over mutated images (seeded, reproducible): qemu-made seeds of every format with a
// checker, bytes of their metadata overwritten at random. Invariants: the op returns a report the
// host accepts or fails with an ImageError (qemu's "Could not open"), never anything else, and
// each case ends quickly. In-process, over memory devices. The same for check -r all over qcow2
// seeds whose refcount and L1/L2 tables are edited (the rebuild and flag repairs).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { ImageDir } from '../differential/harness.ts';
import { MemoryDevice } from '../../src/io/fd-device.ts';
import { ImageError } from '../../src/formats/types.ts';
import { checkOp } from '../../src/ops/check.ts';
import { validCheckResult } from '../../src/host/commands/check-result.ts';
import type { OpContext } from '../../src/ops/types.ts';

const images = new ImageDir('check-fuzz');
// INSTAR_CHECK_FUZZ_CASES=N runs a longer campaign locally.
const CASES_PER_SEED = Number(process.env.INSTAR_CHECK_FUZZ_CASES ?? 150);
const CASE_MS = 3000;

const SEEDS: [file: string, format: string, build: (d: ImageDir) => void][] = [
  ['q.qcow2', 'qcow2', (d) => {
    d.img('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', 'q.qcow2', '4M');
    d.io('-c', 'write -P 1 0 64k', '-c', 'write -P 2 1M 8k', 'q.qcow2');
    d.img('snapshot', '-c', 's1', 'q.qcow2');
    d.img('bitmap', '--add', 'q.qcow2', 'b1');
  }],
  ['r.qcow2', 'qcow2', (d) => {
    d.img('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096,refcount_bits=8', 'r.qcow2', '4M');
    d.io('-c', 'write -P 1 0 40k', '-c', 'write -P 2 2M 12k', 'r.qcow2');
    d.img('snapshot', '-c', 's1', 'r.qcow2');
  }],
  ['c.qcow2', 'qcow2', (d) => d.img('convert', '-c', '-O', 'qcow2', '-o', 'cluster_size=4096', 'q.qcow2', 'c.qcow2')],
  ['e.qcow2', 'qcow2', (d) => {
    d.img('create', '-q', '-f', 'qcow2', '-o', 'extended_l2=on,cluster_size=16k,refcount_bits=1', 'e.qcow2', '4M');
    d.io('-c', 'write -P 1 0 20k', 'e.qcow2');
  }],
  ...(['vdi', 'qed', 'parallels', 'vmdk', 'vhdx'] as const).map((f): [string, string, (d: ImageDir) => void] => [`x.${f}`, f, (d) => {
    d.img('create', '-q', '-f', f, `x.${f}`, '4M');
    d.io('-f', f, '-c', 'write -P 1 0 64k', `x.${f}`);
  }]),
];

before(() => {
  for (const [, , build] of SEEDS) build(images);
});
after(() => images.remove());

/** xorshift32: the same cases on every run. */
function prng(seed: number): () => number {
  let x = seed || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 0x100000000;
  };
}

function mutate(bytes: Buffer, random: () => number): Buffer {
  const out = Buffer.from(bytes);
  // Metadata lives near the start in these small images; aim most edits there.
  const span = Math.min(out.length, 256 * 1024);
  const edits = 1 + Math.floor(random() * 8);
  for (let i = 0; i < edits; i++) {
    const at = Math.floor(random() * span);
    const kind = random();
    if (kind < 0.5) out[at] = Math.floor(random() * 256);
    else if (kind < 0.8) out.fill(0xff, at, Math.min(out.length, at + 1 + Math.floor(random() * 8)));
    else out.fill(0, at, Math.min(out.length, at + 1 + Math.floor(random() * 64)));
  }
  return random() < 0.1 ? out.subarray(0, Math.floor(random() * out.length)) : out;
}

for (const [file, format] of SEEDS.map(([f, fmt]) => [f, fmt] as const)) {
  test(`check op over ${CASES_PER_SEED} mutations of ${file}`, () => {
    const seed = readFileSync(images.path(file));
    const random = prng(file.length * 7919 + seed.length);
    const failures: string[] = [];
    let reports = 0;
    for (let n = 0; n < CASES_PER_SEED; n++) {
      const bytes = mutate(seed, random);
      const ctx: OpContext = { devices: [{ spec: { fd: 0, role: 'input', writable: false }, dev: new MemoryDevice(bytes) }], emit: () => {} };
      const started = performance.now();
      try {
        const result = checkOp({ format, fileName: file, profile: { major: n % 2 ? 7 : 10 } } as Record<string, unknown>, ctx);
        validCheckResult(result);
        reports++;
      } catch (e) {
        if (!(e instanceof ImageError)) failures.push(`case ${n}: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
      }
      const ms = performance.now() - started;
      if (ms > CASE_MS) failures.push(`case ${n}: ${Math.round(ms)} ms`);
    }
    assert.deepEqual(failures, []);
    assert.ok(reports > 0, 'some mutated images still open and get checked');
  });
}

/** A writable memory device that grows as a file does (a rebuild writes past the end). */
/**
 * A memory device that writes past its end extend, as a file's do. Its storage grows by doubling
 * (a repair writing cluster after cluster past the end copied the whole image at each: c.qcow2
 * case 74 took 1 s, 5 s on a loaded CI machine, against the 3 s bound).
 */
class GrowingDevice extends MemoryDevice {
  private length: number;

  constructor(bytes: Uint8Array) {
    super(bytes);
    this.length = bytes.length;
  }

  override get size(): number {
    return this.length;
  }

  override read(buf: Uint8Array, pos: number): number {
    if (pos >= this.length) return 0;
    const part = this.bytes.subarray(pos, Math.min(this.length, pos + buf.length));
    buf.set(part);
    return part.length;
  }

  write(buf: Uint8Array, pos: number): void {
    if (pos + buf.length > this.length) this.truncate(pos + buf.length);
    this.bytes.set(buf, pos);
  }

  truncate(size: number): void {
    if (size > this.bytes.length) {
      const next = new Uint8Array(Math.max(size, 2 * this.bytes.length));
      next.set(this.bytes.subarray(0, this.length));
      this.bytes = next;
    } else if (size < this.length) {
      // What a later growth brings back reads as zeros, as a file's does.
      this.bytes.fill(0, size, this.length);
    }
    this.length = size;
  }
}

const REPAIR_CASES = Math.ceil(CASES_PER_SEED / 2);

/** Random edits aimed at what check -r repairs: the refcount table and blocks, the L1 and L2 tables. */
function mutateRefcountMetadata(bytes: Buffer, random: () => number): Buffer {
  const out = Buffer.from(bytes);
  const cs = 2 ** out.readUInt32BE(20);
  const reftable = Number(out.readBigUInt64BE(48));
  const refblock = Number(out.readBigUInt64BE(reftable) & 0xfffffffffffe00n);
  const l1 = Number(out.readBigUInt64BE(40));
  const l2 = Number(out.readBigUInt64BE(l1) & 0xfffffffffffe00n);
  const regions = [[reftable, 64], [refblock, 512], [l1, 64], [l2, 512]].filter(([at]) => at > 0 && at < out.length);
  for (let edits = 1 + Math.floor(random() * 4); edits > 0; edits--) {
    const [start, span] = regions[Math.floor(random() * regions.length)];
    const at = start + Math.floor(random() * Math.min(span, cs));
    if (at >= out.length) continue;
    const kind = random();
    if (kind < 0.6) out[at] = random() < 0.5 ? Math.floor(random() * 4) : Math.floor(random() * 256);
    else if (kind < 0.8) out[at] ^= 0x80;
    else out.fill(0, at, Math.min(out.length, at + 8));
  }
  return out;
}

test(`check -r all over ${REPAIR_CASES} refcount and table mutations of each qcow2 seed`, () => {
  const failures: string[] = [];
  let repaired = 0;
  for (const file of ['r.qcow2', 'c.qcow2', 'e.qcow2']) {
    const seed = readFileSync(images.path(file));
    const random = prng(file.length * 104729 + seed.length);
    for (let n = 0; n < REPAIR_CASES; n++) {
      const dev = new GrowingDevice(mutateRefcountMetadata(seed, random));
      const ctx: OpContext = { devices: [{ spec: { fd: 0, role: 'input', writable: true }, dev }], emit: () => {} };
      const started = performance.now();
      try {
        const result = checkOp({ format: 'qcow2', fileName: file, repair: 'all', profile: { major: n % 2 ? 7 : 10 } } as Record<string, unknown>, ctx);
        validCheckResult(result);
        if ('repair' in result && result.repair) repaired++;
      } catch (e) {
        if (!(e instanceof ImageError)) failures.push(`${file} case ${n}: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
      }
      const ms = performance.now() - started;
      if (ms > CASE_MS) failures.push(`${file} case ${n}: ${Math.round(ms)} ms`);
    }
  }
  assert.deepEqual(failures, []);
  // The rest are refused (table repairs instar leaves to qemu) or fail to open.
  assert.ok(repaired >= 10, `some mutated images get repaired (${repaired})`);
});
