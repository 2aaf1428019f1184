// Runs one fuzz case in-process against the format drivers over a MemoryDevice and checks the
// invariants: only ImageError escapes open/info/read/extent; no allocation above a budget;
// extent() walks tile [0, virtualSize) with no gap and no overlap; the map op's merged entries
// tile the disk too and every message it sends passes the host's check; bounded time per case.
import { MemoryDevice } from '../../src/io/fd-device.ts';
import { ImageError, type Image } from '../../src/formats/types.ts';
import { detectFormat } from '../../src/formats/detect.ts';
import { findDriver } from '../../src/formats/registry.ts';
import { mapOp, type MapResult } from '../../src/ops/map.ts';
import { parseGuestMessage } from '../../src/host/sandbox/guest-messages.ts';
import type { OpContext } from '../../src/ops/types.ts';
import type { MapEntry } from '../../src/protocol/messages.ts';

export const LIMITS = {
  /** Growth of ArrayBuffer memory (Buffers, typed arrays) allowed while a case runs. */
  allocationBytes: 256 * 1024 * 1024,
  /** A case that takes longer is a finding (the campaign's watchdog also kills hangs). */
  caseMs: 2000,
  /** Extents walked per case; a walk that needs more stops there (not a finding). */
  extentSteps: 4096,
  /** The map op (ops/map.ts) runs over at most this much of the disk. */
  mapBytes: 256 * 1024 * 1024,
};

export interface CaseInput {
  bytes: Buffer;
  /** The driver to open with; undefined = detection decides (with unsafe quirks, so raw is possible). */
  driver?: string;
}

export interface CaseResult {
  /** A broken invariant, or undefined when the case passed (opened or refused cleanly). */
  failure?: string;
  opened: boolean;
  ms: number;
}

function arrayBuffers(): number {
  return process.memoryUsage().arrayBuffers;
}

export function runCase(input: CaseInput, limits: typeof LIMITS = LIMITS): CaseResult {
  const started = performance.now();
  const base = arrayBuffers();
  let opened = false;
  const memoryCheck = (stage: string) => {
    const grew = arrayBuffers() - base;
    if (grew > limits.allocationBytes) throw new Invariant(`${stage}: ArrayBuffer memory grew by ${grew} bytes`);
  };
  try {
    const dev = new MemoryDevice(input.bytes);
    const name = input.driver ?? detectFormat(dev, { unsafeQuirks: true });
    const driver = findDriver(name);
    if (!driver) throw new Invariant(`no driver '${name}'`);
    driver.probe(input.bytes.subarray(0, 2048));
    const image = driver.open(dev, { writable: false, devices: new Map() });
    opened = true;
    memoryCheck('open');
    const info = image.info();
    if (!Number.isSafeInteger(image.virtualSize) || image.virtualSize < 0) throw new Invariant(`virtualSize ${image.virtualSize}`);
    if (info['virtual-size'] !== image.virtualSize) throw new Invariant(`info virtual-size ${info['virtual-size']} != ${image.virtualSize}`);
    memoryCheck('info');
    walkExtents(image, limits.extentSteps);
    memoryCheck('extent walk');
    checkMapOp(input.bytes, name, image.virtualSize, limits.mapBytes);
    memoryCheck('map op');
    readSome(image);
    memoryCheck('read');
  } catch (e) {
    if (e instanceof Invariant) return { failure: e.message, opened, ms: performance.now() - started };
    if (!(e instanceof ImageError)) {
      const err = e as Error;
      return { failure: `${err?.name ?? typeof e} escaped: ${err?.message ?? String(e)} @ ${topFrame(err)}`, opened, ms: performance.now() - started };
    }
  }
  const ms = performance.now() - started;
  if (ms > limits.caseMs) return { failure: `took ${Math.round(ms)} ms`, opened, ms };
  return { opened, ms };
}

class Invariant extends Error {}

function walkExtents(image: Image, steps: number): void {
  const size = image.virtualSize;
  let offset = 0;
  for (let step = 0; offset < size && step < steps; step++) {
    const e = image.extent(offset, size - offset);
    if (e.offset !== offset) throw new Invariant(`extent at ${offset} starts at ${e.offset}`);
    if (!Number.isSafeInteger(e.length) || e.length <= 0) throw new Invariant(`extent at ${offset} has length ${e.length}`);
    if (offset + e.length > size) throw new Invariant(`extent at ${offset} (+${e.length}) runs past the virtual size ${size}`);
    if (!['data', 'zero', 'unallocated'].includes(e.kind)) throw new Invariant(`extent kind ${e.kind}`);
    offset += e.length;
  }
}

/**
 * The `map` op as the guest runs it (merging included) over [0, min(size, max)): every message it
 * emits must pass the host's check (src/host/sandbox/guest-messages.ts), and the entries must tile
 * the range exactly once, in order, with the count the op reports.
 */
function checkMapOp(bytes: Buffer, format: string, size: number, max: number): void {
  const length = Math.min(size, max);
  const entries: MapEntry[] = [];
  const ctx: OpContext = {
    devices: [{ spec: { fd: 0, role: 'input', writable: false }, dev: new MemoryDevice(bytes) }],
    emit: (msg) => {
      const checked = parseGuestMessage(JSON.stringify(msg));
      if (typeof checked === 'string') throw new Invariant(`map op: the host refuses its message: ${checked}`);
      if (checked.type === 'map-entries') entries.push(...checked.entries);
    },
  };
  let result: MapResult;
  try {
    result = mapOp({ format, unsafeQuirks: true, start: '0', maxLength: String(length), human: false, secrets: {} }, ctx);
  } catch (e) {
    // MissingFilesError (a backing file, an extent) is an ImageError too: a clean refusal.
    if (e instanceof ImageError) return;
    throw e;
  }
  if (result.entries !== entries.length) throw new Invariant(`map op: reported ${result.entries} entries, sent ${entries.length}`);
  let at = 0;
  for (const [start, len] of entries) {
    if (start !== at) throw new Invariant(`map op: entry at ${start}, expected ${at} (gap or overlap)`);
    if (!(len > 0)) throw new Invariant(`map op: entry at ${start} has length ${len}`);
    at += len;
  }
  if (length > 0 && at !== length) throw new Invariant(`map op: entries end at ${at}, the range at ${length}`);
}

/** Reads at the start, the middle, the end and across the first extent boundary. */
function readSome(image: Image): void {
  const size = image.virtualSize;
  if (size === 0) return;
  const buf = Buffer.alloc(Math.min(65536, size));
  const at = [0, Math.floor(size / 2 / 512) * 512, size - buf.length];
  for (const offset of at) image.read(buf, Math.max(0, Math.min(offset, size - buf.length)));
}

function topFrame(e: Error | undefined): string {
  const frame = e?.stack?.split('\n').find((l) => l.includes('/src/'));
  return frame ? frame.trim().replace(/^at /, '').replace(/.*\/src\//, 'src/') : '?';
}
