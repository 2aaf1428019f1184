// Argon2i/Argon2id for LUKS2 key slots, computed by hash-wasm's WebAssembly (bundled into the guest).
// hash-wasm only offers an async API while images are opened synchronously, so a key derivation
// is a two-step affair: the synchronous unlock asks for a derived key; when it is not computed yet
// it throws Argon2Pending; the op wrapper (withArgon2) computes it asynchronously, caches it, and
// runs the op again, which now finds it. Reopening costs a header parse; the KDF runs once.
//
// A header chooses its own costs, so they are bounded before anything is allocated or run: memory
// by the guest's memory budget, time by the work one unlock may take.
import { argon2i, argon2id } from 'hash-wasm';
import { createHash } from 'node:crypto';
import { ImageError } from '../types.ts';
import { GUEST_MEMORY_BYTES } from '../../host/sandbox/limits.ts';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

/** Largest Argon2 memory cost accepted: the guest's data limit less room for Node and the copy buffers. */
export const MAX_ARGON2_MEMORY_KIB = (GUEST_MEMORY_BYTES - 512 * MiB) / KiB;
/**
 * Largest work (memory × passes) of one derivation: 32 GiB-passes, about a minute and a half of
 * one core here. cryptsetup calibrates real slots to ~2 s of its machine (1 GiB × 4-10 passes).
 */
export const MAX_ARGON2_WORK_KIB = (32 * GiB) / KiB;
/** Lanes: cryptsetup uses at most 4; Argon2 itself allows 2^24 - 1. */
const MAX_LANES = 64;

export interface Argon2Job {
  type: 'argon2i' | 'argon2id';
  password: Uint8Array;
  salt: Uint8Array;
  /** Passes (LUKS2 "time"). */
  time: number;
  /** KiB (LUKS2 "memory"). */
  memory: number;
  /** Lanes (LUKS2 "cpus"). */
  lanes: number;
  length: number;
}

/** Thrown by a synchronous derivation that has to wait for the asynchronous one. */
export class Argon2Pending extends Error {
  constructor(readonly job: Argon2Job) {
    super('Argon2 key derivation pending (internal: the op wrapper computes it)');
    this.name = 'Argon2Pending';
  }
}

/** Derived keys by job, for this process's lifetime (one op in the guest; a few in tests). */
const derived = new Map<string, Buffer>();
const MAX_CACHED = 64;

function jobKey(job: Argon2Job): string {
  return createHash('sha256')
    .update(JSON.stringify([job.type, job.time, job.memory, job.lanes, job.length]))
    .update(Buffer.from(job.salt).toString('hex'))
    .update(':')
    .update(job.password)
    .digest('hex');
}

/** Refuses costs outside the bounds, with one line naming the cost and the bound. */
export function checkArgon2Costs(job: Pick<Argon2Job, 'time' | 'memory' | 'lanes'>, what: string): void {
  const { time, memory, lanes } = job;
  if (!Number.isSafeInteger(lanes) || lanes < 1 || lanes > MAX_LANES) throw new ImageError(`${what}: Argon2 parallelism ${lanes} is outside what instar accepts (1 to ${MAX_LANES})`);
  if (!Number.isSafeInteger(memory) || memory < 8 * lanes) throw new ImageError(`${what}: Argon2 memory cost ${memory} KiB is invalid`);
  if (memory > MAX_ARGON2_MEMORY_KIB) {
    throw new ImageError(`${what}: Argon2 memory cost ${memory} KiB exceeds the guest's memory budget (at most ${MAX_ARGON2_MEMORY_KIB} KiB)`);
  }
  if (!Number.isSafeInteger(time) || time < 1 || time * memory > MAX_ARGON2_WORK_KIB) {
    throw new ImageError(`${what}: Argon2 time cost ${time} with ${memory} KiB is more work than instar accepts (time × memory at most ${MAX_ARGON2_WORK_KIB} KiB)`);
  }
}

/** The derived key when it is known; otherwise Argon2Pending (see withArgon2). Costs are checked first. */
export function argon2Sync(job: Argon2Job, what: string): Buffer {
  checkArgon2Costs(job, what);
  if (job.salt.length < 8) throw new ImageError(`${what}: Argon2 salt is shorter than 8 bytes`);
  const hit = derived.get(jobKey(job));
  if (hit) return Buffer.from(hit);
  throw new Argon2Pending(job);
}

async function compute(job: Argon2Job): Promise<Buffer> {
  const f = job.type === 'argon2i' ? argon2i : argon2id;
  try {
    const out = await f({
      password: job.password,
      salt: job.salt,
      iterations: job.time,
      memorySize: job.memory,
      parallelism: job.lanes,
      hashLength: job.length,
      outputType: 'binary',
    });
    return Buffer.from(out);
  } catch (e) {
    // hash-wasm refuses an empty password; anything else is memory the limit refused.
    const msg = e instanceof Error ? e.message : String(e);
    throw new ImageError(`Argon2 key derivation failed: ${msg}`);
  }
}

/** Wraps an op so that Argon2Pending is computed and the op run again (at most once per key slot). */
export function withArgon2<A extends unknown[]>(op: (...args: A) => unknown): (...args: A) => Promise<unknown> {
  return async (...args: A) => {
    // LUKS2 has at most 32 key slots: each may ask once.
    for (let round = 0; ; round++) {
      try {
        return await op(...args);
      } catch (e) {
        if (!(e instanceof Argon2Pending) || round >= 32) throw e;
        if (derived.size >= MAX_CACHED) derived.clear();
        derived.set(jobKey(e.job), await compute(e.job));
      }
    }
  };
}

/** The asynchronous derivation itself, for callers that can wait (tests, library use). */
export async function argon2(job: Argon2Job, what: string): Promise<Buffer> {
  checkArgon2Costs(job, what);
  return compute(job);
}
