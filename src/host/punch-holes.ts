// `convert -n` into an existing raw file: qemu-img turns every zero run of the copy into a
// write-zeroes request that a regular file serves by punching a hole (fallocate PUNCH_HOLE), so
// the target ends up as sparse as a fresh one. Node cannot punch holes and the guest has no FFI;
// the trusted host punches the whole copy range once before the copy starts, and the guests then
// treat the target as reading zeros (they skip zero runs, as on a fresh target). The end state is
// qemu's: data where the disk has data, holes where it has zeros.
import { fstatSync } from 'node:fs';
import { libcFunction } from './libc.ts';
import { fileId } from './paths/resolve.ts';

const FALLOC_FL_KEEP_SIZE = 1;
const FALLOC_FL_PUNCH_HOLE = 2;

type Fallocate = (fd: number, mode: number, offset: number, length: number) => number;

/** The identity (paths/resolve.ts) of the file open at `fd`, kept after the fd is closed. */
export function fdFileId(fd: number): string {
  return fileId(fstatSync(fd, { bigint: true }));
}

/**
 * Punches [0, length) of the regular file open at `target` (its size unchanged). False, with the
 * file untouched, where that cannot be done safely: not a regular file, the same file as one of
 * `inputs` (every file the copy reads: punching first would destroy what it reads), no koffi, or
 * a file system without hole punching. The caller then writes zeros as before.
 */
export function punchTarget(target: number, length: number, inputs: readonly string[]): boolean {
  if (length <= 0) return true;
  const st = fstatSync(target, { bigint: true });
  if (!st.isFile()) return false;
  if (inputs.includes(fileId(st))) return false;
  const fallocate = libcFunction<Fallocate>('int fallocate(int fd, int mode, int64_t offset, int64_t len)');
  if (!fallocate) return false;
  return fallocate(target, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, length) === 0;
}

/**
 * Punches [pos, pos + length) of the regular file open at `fd` (the caller checked it is one; its
 * size unchanged), as qemu's discard of a freed qcow2 cluster does. False, with the file
 * untouched, where that cannot be done (no koffi, no hole punching here): the caller writes zeros.
 */
export function punchRange(fd: number, pos: number, length: number): boolean {
  if (length <= 0) return true;
  const fallocate = libcFunction<Fallocate>('int fallocate(int fd, int mode, int64_t offset, int64_t len)');
  if (!fallocate) return false;
  return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, pos, length) === 0;
}
