// cache=none and directsync (-t/-T none|off|directsync) open an image with O_DIRECT, and qemu's
// file driver then probes the alignment O_DIRECT needs by reading 1, 512, ... 4096 bytes at
// offset 0 (raw_probe_alignment). Where the 1-byte read succeeds (ext4 serves a hole or an
// unwritten extent at the start of the file that way) the probe falls back to 4096. A raw (or
// file) node opened for writing without the resize permission (commit, rebase, amend, check -r)
// then refuses a size that is not a multiple of it, at the open, before anything else.
// Only that case is modelled: where the 1-byte read fails, 512 is taken (the usual logical
// block size), whose multiple every size qemu sees (whole sectors) is.
// The same alignment shapes what O_DIRECT writes leave: the block layer widens a write to whole
// aligned blocks (read-modify-write), so a write that grows the file to an unaligned end (a
// qcow2 close storing bitmaps after compressed clusters) leaves it padded with zeros to the
// next 512 bytes (padDirectWrites).
import { closeSync, constants, fstatSync, ftruncateSync, openSync, readSync } from 'node:fs';
import type { ParsedCommand } from '../cli/types.ts';
import { InputImageError, type Target } from './input-image.ts';

const DIRECT_MODES = new Set(['none', 'off', 'directsync']);
/** qemu's fallback alignment when any read length works (MAX_BLOCKSIZE, the page size here). */
const FALLBACK_ALIGNMENT = 4096;
const SECTOR = 512;

/** Whether an O_DIRECT read of one byte at offset 0 of the open file `fd` succeeds. */
function oneByteDirectRead(fd: number): boolean {
  let direct: number;
  try {
    // The same open file, by its descriptor: no second lookup of the path.
    direct = openSync(`/proc/self/fd/${fd}`, constants.O_RDONLY | constants.O_DIRECT);
  } catch {
    return false;
  }
  try {
    readSync(direct, Buffer.alloc(1), 0, 1, 0);
    return true;
  } catch {
    return false;
  } finally {
    closeSync(direct);
  }
}

/** Images opened for writing with O_DIRECT in qemu's place, by descriptor: the file and its size at the open. */
const directSizes = new Map<number, { ino: number; dev: number; size: number }>();

/** Whether the command opens its images with O_DIRECT (-t none|off|directsync). */
export function directCache(cmd: ParsedCommand): boolean {
  const cache = cmd.options.get('cache')?.at(-1);
  return cache !== undefined && DIRECT_MODES.has(cache);
}

/** qemu's reason for refusing a raw image opened with O_DIRECT for writing without resize: its size is not aligned. */
export const UNALIGNED_DIRECT_WRITE = "Cannot get 'write' permission without 'resize': Image size is not a multiple of request alignment";

/** Whether the raw image open as `fd` has a size the probed O_DIRECT alignment does not divide. */
export function unalignedForDirectWrite(fd: number): boolean {
  const bytes = Math.ceil(fstatSync(fd).size / SECTOR) * SECTOR;
  return bytes % FALLBACK_ALIGNMENT !== 0 && oneByteDirectRead(fd);
}

/** qemu's refusal of a writable O_DIRECT open of a raw image whose size the probed alignment does not divide. */
export function checkDirectWrite(cmd: ParsedCommand, target: Target, fd: number): void {
  const direct = directCache(cmd);
  const st = fstatSync(fd);
  if (direct) directSizes.set(fd, { ino: st.ino, dev: st.dev, size: st.size });
  else directSizes.delete(fd);
  if (!direct || (target.format !== 'raw' && target.format !== 'file') || !unalignedForDirectWrite(fd)) return;
  directSizes.delete(fd);
  closeSync(fd);
  throw new InputImageError(`Could not open '${target.errorName}': ${UNALIGNED_DIRECT_WRITE}`);
}

/** After the op: an O_DIRECT image the op grew to an unaligned end is padded as qemu's aligned writes pad it. */
export function padDirectWrites(fd: number): void {
  const before = directSizes.get(fd);
  if (before === undefined) return;
  directSizes.delete(fd);
  const st = fstatSync(fd);
  // A descriptor number reused for another file (a command that failed before its op) is not this one.
  if (st.ino !== before.ino || st.dev !== before.dev) return;
  if (st.size > before.size && st.size % SECTOR !== 0) ftruncateSync(fd, Math.ceil(st.size / SECTOR) * SECTOR);
}
