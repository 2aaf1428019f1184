// preallocation=falloc|full of a raw (or `file`) target, on the trusted side: qemu's file protocol
// reserves the blocks with posix_fallocate (falloc: unwritten extents, which read as zeros and
// which SEEK_DATA, so qemu's map, calls holes) or writes zeros over them (full). The guest has no
// FFI for fallocate, and preallocating parses nothing, so the host does it on the fd it created.
// A full disk fails the command with qemu's words, never a short file taken for a good one.
import { fstatSync, writeSync } from 'node:fs';
import { libcFunction } from './libc.ts';
import { strerror } from '../strerror.ts';
import { strerrorNumber } from '../strerror-number.ts';
import type { CreatePlan } from '../formats/types.ts';

type PosixFallocate = (fd: number, offset: number, length: number) => number;

const ZERO_CHUNK = 4 * 1024 * 1024;

/** A preallocation the file system refused (ENOSPC, EFBIG...), in qemu's file-posix words. */
export class PreallocationFailure extends Error {}

/** Writes zeros over [start, end) of `fd` (preallocation=full); a short write is retried, as it ends at a full disk. */
export function writeZeros(fd: number, end: number, start = 0): void {
  if (end <= start) return;
  const zeros = Buffer.alloc(Math.min(ZERO_CHUNK, end - start));
  try {
    for (let pos = start; pos < end; ) pos += writeSync(fd, zeros, 0, Math.min(zeros.length, end - pos), pos);
  } catch (e) {
    throw new PreallocationFailure(`Could not write zeros for preallocation: ${strerror((e as NodeJS.ErrnoException).code ?? 'EIO')}`);
  }
}

/**
 * Reserves [start, end) of `fd` as qemu's falloc does (posix_fallocate: glibc writes the blocks
 * itself on a file system without fallocate). Blocks already written keep their bytes (it only
 * fills holes), so this may follow the guest's writes. False where koffi cannot be loaded: the
 * caller leaves holes (the same zeros, read back).
 */
export function reserveBlocks(fd: number, end: number, start = 0): boolean {
  if (end <= start) return true;
  const posixFallocate = libcFunction<PosixFallocate>('int posix_fallocate(int fd, int64_t offset, int64_t len)');
  if (posixFallocate === null) return false;
  // posix_fallocate returns the error number itself; errno is left alone.
  const code = posixFallocate(fd, start, end - start);
  if (code !== 0) throw new PreallocationFailure(`Could not preallocate new data: ${strerrorNumber(code)}`);
  return true;
}

/** A range to reserve that is not [start, end) inside the file: the guest's answer is malformed. */
export class MalformedRange extends Error {}

/**
 * Reserves the range a guest named in the file it created (`range`: checked, it comes from the
 * guest): create's and convert's falloc. Throws MalformedRange, or PreallocationFailure when the
 * file system refuses.
 */
export function reserveNamedRange(fd: number, range: unknown): void {
  const size = fstatSync(fd).size;
  const ok = Array.isArray(range) && range.length === 2 && range.every((n) => Number.isSafeInteger(n)) && 0 <= range[0] && range[0] <= range[1] && range[1] <= size;
  if (!ok) throw new MalformedRange('the guest named a malformed range to reserve');
  reserveBlocks(fd, range[1] as number, range[0] as number);
}

/** Formats whose create preallocates the whole file before writing anything else (qemu's file protocol truncate). */
const ZEROS_FIRST = new Set(['raw', 'file', 'luks']);

/**
 * qemu's words when a new image's preallocation meets a full disk (the guest's write failed with
 * `code`), or undefined for a plain write failure: raw, file and luks preallocate the file first;
 * qcow2 (no data file) in its resize to the disk size.
 */
export function preallocationWriteFailure(format: string, plan: CreatePlan, code: string): string | undefined {
  if (ZEROS_FIRST.has(format) && plan.allocate === true) return `Could not write zeros for preallocation: ${strerror(code)}`;
  if (ZEROS_FIRST.has(format) && plan.fallocate === true) return `Could not preallocate new data: ${strerror(code)}`;
  if (format === 'qcow2' && plan.full === true && plan.dataFile === undefined && code === 'ENOSPC') {
    return `Could not resize image: Failed to resize underlying file: ${plan.falloc === true ? 'Could not preallocate new data' : 'Could not write zeros for preallocation'}: ${strerror(code)}`;
  }
  return undefined;
}
