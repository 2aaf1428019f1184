// cache=none and directsync (-t/-T none|off|directsync) open an image with O_DIRECT, and qemu's
// file driver then probes the alignment O_DIRECT needs by reading 1, 512, ... 4096 bytes at
// offset 0 (raw_probe_alignment). Where the 1-byte read succeeds (ext4 serves a hole or an
// unwritten extent at the start of the file that way) the probe falls back to 4096. A raw (or
// file) node opened for writing without the resize permission (commit, rebase, amend, check -r)
// then refuses a size that is not a multiple of it, at the open, before anything else.
// Only that case is modelled: where the 1-byte read fails, 512 is taken (the usual logical
// block size), whose multiple every size qemu sees (whole sectors) is.
import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
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

/** qemu's refusal of a writable O_DIRECT open of a raw image whose size the probed alignment does not divide. */
export function checkDirectWrite(cmd: ParsedCommand, target: Target, fd: number): void {
  const cache = cmd.options.get('cache')?.at(-1);
  if (cache === undefined || !DIRECT_MODES.has(cache) || (target.format !== 'raw' && target.format !== 'file')) return;
  const bytes = Math.ceil(fstatSync(fd).size / SECTOR) * SECTOR;
  if (bytes % FALLBACK_ALIGNMENT === 0 || !oneByteDirectRead(fd)) return;
  closeSync(fd);
  throw new InputImageError(`Could not open '${target.errorName}': Cannot get 'write' permission without 'resize': Image size is not a multiple of request alignment`);
}
