// A file the path policy let the host open for reading (commit's base, its VMDK extents; convert
// -n's extents; resize's data file), reopened read-write by the name qemu gives it, as qemu's
// reopen does. The name must still lead to the same regular file (device and inode), or nothing
// is written; the reader's locks are then given up for the writer's, unless the caller keeps them.
import { closeSync, fstatSync, openSync } from 'node:fs';
import { handOverToWriter, LockConflict } from './image-locks.ts';

/** How the caller words each failure (its command's error class and qemu's text). */
export interface ReopenWords {
  open(code: string): Error;
  changed(): Error;
  locked(conflict: LockConflict): Error;
}

/**
 * `raw`: the writer's locks of a raw image; `dataChild`: of a format's data child (a flat VMDK
 * extent); 'keep': the reader's locks stay (a data file's, qemu's).
 */
export function reopenWritable(path: string, granted: number, flags: number, locks: { raw: boolean; dataChild?: boolean } | 'keep', words: ReopenWords): number {
  const seen = fstatSync(granted, { bigint: true });
  let rw: number;
  try {
    rw = openSync(path, flags);
  } catch (e) {
    throw words.open((e as NodeJS.ErrnoException).code ?? 'EIO');
  }
  const now = fstatSync(rw, { bigint: true });
  if (now.dev !== seen.dev || now.ino !== seen.ino || !now.isFile()) {
    closeSync(rw);
    throw words.changed();
  }
  if (locks === 'keep') return rw;
  try {
    handOverToWriter(granted, rw, path, locks.raw, locks.dataChild);
  } catch (e) {
    if (e instanceof LockConflict) throw words.locked(e);
    throw e;
  }
  return rw;
}
