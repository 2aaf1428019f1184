// convert's new target and how many copy guests fill it, shared by the command and by the CLI's
// early start (src/cli/early-start.ts), which creates the target ahead of the command so that the
// copy guests can boot while the command's code loads. Kept free of heavy imports: the CLI loads
// this module on every start.
import { closeSync, constants, fstatSync, lstatSync, openSync, unlinkSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { fileId } from '../paths/resolve.ts';
import { lockCreatedTarget } from '../image-locks.ts';

/**
 * Raw files (-f raw: nothing below them) with this many bytes in all copy in less time than a
 * second guest takes to start, and a second start on a 2-core machine slows the first.
 */
const ONE_GUEST_BYTES = 64 * 1024 * 1024;

/**
 * One guest per core (two at most): the one-round copy starts this many (open-copy.ts), the two
 * rounds as many at most. One for small raw files, when the sources are given: the early start
 * (src/cli/early-start.ts) and the command must count alike, so both pass the same sources.
 */
export function copyGuestCount(sources?: { fd: number; format?: string }[]): number {
  const cores = Math.max(1, Math.min(2, availableParallelism()));
  if (cores === 1 || !sources?.length || !sources.every((s) => s.format === 'raw')) return cores;
  let bytes = 0;
  for (const s of sources) {
    const st = fstatSync(s.fd);
    // A device's st_size says nothing of its size.
    if (!st.isFile()) return cores;
    bytes += st.size;
  }
  return bytes <= ONE_GUEST_BYTES ? 1 : cores;
}

/**
 * Creates `path` if nothing is there (never follows or replaces anything); undefined otherwise.
 * Read-write: the locks takeTarget sets are read locks, which need a file open for reading.
 */
function createExclusive(path: string): number | undefined {
  try {
    return openSync(path, constants.O_RDWR | constants.O_CREAT | constants.O_EXCL | constants.O_NOCTTY, 0o644);
  } catch {
    return undefined;
  }
}

/** A target the early start created and the command has not taken yet. */
let early: { path: string; fd: number; id: string } | undefined;

/** Whether `path` still names the file of identity `id` (nobody removed or replaced it meanwhile). */
function stillNames(path: string, id: string): boolean {
  try {
    return fileId(lstatSync(path, { bigint: true })) === id;
  } catch {
    return false;
  }
}

/**
 * The command's fresh target: the one the early start created for this very path when it is
 * still there, else created now. Undefined when something is already there (the caller keeps
 * qemu's two rounds, which open it as it is).
 */
export function createFreshTarget(path: string): number | undefined {
  let fd: number | undefined;
  if (early) {
    const e = early;
    if (e.path === path && stillNames(path, e.id)) {
      early = undefined;
      fd = e.fd;
    } else {
      // Not this command's target after all, or gone: ours goes before the path is tried again.
      removeEarlyTarget();
    }
  }
  fd ??= createExclusive(path);
  if (fd !== undefined) takeTarget(fd, path);
  return fd;
}

/**
 * The locks qemu's raw target holds while it is written (image-locks.ts, 'target'): another
 * qemu-img opening it meanwhile meets them as it would meet qemu's. Taken here rather than at the
 * early start's create, where loading the lock call would delay the guests.
 * A file named in the open phase is compared with the target before it is locked (open-files.ts),
 * so a source naming the target still takes the two rounds instead of meeting this lock.
 */
function takeTarget(fd: number, path: string): void {
  // Nobody had this file a moment ago (O_EXCL): a process that opened it since keeps it.
  lockCreatedTarget(fd, path);
}

/** The early start's create: the same O_EXCL open the command makes; undefined if anything is there. */
export function createEarlyTarget(path: string): number | undefined {
  if (early) return undefined;
  const fd = createExclusive(path);
  if (fd === undefined) return undefined;
  early = { path, fd, id: fileId(fstatSync(fd, { bigint: true })) };
  return fd;
}

/**
 * Removes an early target the command did not take (it failed first, or went another way): qemu
 * creates nothing for a command line it refuses. Only the file created here, and only while its
 * name still leads to it; anything the user put there since stays.
 */
export function removeEarlyTarget(): void {
  if (!early) return;
  const { path, fd, id } = early;
  early = undefined;
  try {
    if (stillNames(path, id)) unlinkSync(path);
  } catch {
    /* already gone */
  } finally {
    closeSync(fd);
  }
}
