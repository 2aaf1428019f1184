// preallocation=falloc|full of a raw (or `file`) target, on the trusted side: qemu's file protocol
// reserves the blocks with fallocate (falloc: unwritten extents, which read as zeros and which
// SEEK_DATA, so qemu's map, calls holes) or writes zeros over them (full). The guest has no FFI
// for fallocate, and preallocating parses nothing, so the host does it on the fd it created.
import { writeSync } from 'node:fs';
import { libcFunction } from './libc.ts';

type Fallocate = (fd: number, mode: number, offset: number, length: number) => number;

const ZERO_CHUNK = 4 * 1024 * 1024;

/** Writes zeros over [start, end) of `fd` (preallocation=full). */
export function writeZeros(fd: number, end: number, start = 0): void {
  if (end <= start) return;
  const zeros = Buffer.alloc(Math.min(ZERO_CHUNK, end - start));
  for (let pos = start; pos < end; pos += zeros.length) writeSync(fd, zeros, 0, Math.min(zeros.length, end - pos), pos);
}

/**
 * Reserves [start, end) of `fd` as qemu's falloc does. Blocks already written keep their bytes
 * (fallocate only fills holes), so this may follow the guest's writes. False where fallocate is
 * not to be had (no koffi, a file system without it): the caller decides what to do instead.
 */
export function reserveBlocks(fd: number, end: number, start = 0): boolean {
  if (end <= start) return true;
  const fallocate = libcFunction<Fallocate>('int fallocate(int fd, int mode, int64_t offset, int64_t len)');
  return fallocate !== null && fallocate(fd, 0, start, end - start) === 0;
}
