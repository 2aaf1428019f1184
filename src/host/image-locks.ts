// qemu's image locking (its file driver's lock bytes), so that instar and qemu processes keep out
// of each other's images as qemu-img and qemu do: a VM's disk is not resized, committed, amended,
// snapshotted or repaired under it, and a VM does not start on an image instar is changing.
//
// Open file description (OFD) locks on single bytes of the image file, as qemu takes them
// (measured with strace on qemu-img 7.2 and 10.0; both alike): a shared lock on byte 100 + p for
// each permission p the process holds, and on byte 200 + p for each one it does not let others
// have. Before it holds them it tests for the opposite: byte 200 + p held by another process for
// a permission it wants ('Failed to get "write" lock'), byte 100 + p for one it does not share
// ('Failed to get shared "write" lock'). Permissions: 0 consistent read, 1 write, 2 write
// unchanged (always shared), 3 resize. What qemu-img holds:
//  - an image it reads (check, map, convert's sources, backing files ...): 0; unshared 1 and 3;
//  - info's images (opened without I/O): nothing; unshared 1 and 3;
//  - an image it writes (resize, commit, snapshot -c, amend, check -r ...): 0, 1, 3; unshared 1, 3;
//  - a file it creates over (create, convert, dd), before truncating it: 1, 3; unshared 3;
//  - convert's new raw target, reopened to be written once created, or an existing one (-n):
//    0, 1 (no resize asked), nothing unshared (the 'target' use); the files of a new image in
//    another format, reopened so too, are written as an image's are;
//  - with -U (force-share): its permissions only, nothing unshared;
//  - a raw image (its format driver passes the file through) unshares nothing, except as a
//    convert source (convert asks its sources to stay unwritten): read 0, written 0, 1, 3, info nothing;
//  - a qcow2's data file or a VMDK's flat extent (a format's data child: the format keeps its
//    size, not its bytes) unshares 3 only, except as a convert source (1 and 3): read 0, written
//    0, 1, 3, info nothing held; the data file of an image written is written (check -r,
//    resize, commit), an extent of one too; sparse extents are locked as images are.
// OFD locks live with the open file, so the guest's inherited descriptor keeps them until the
// last descriptor closes. They need koffi (fcntl): without it, or on a file system that has no
// OFD locks, instar locks nothing, as qemu's locking=auto does where it cannot lock.
import { closeSync, constants, fstatSync, ftruncateSync, openSync } from 'node:fs';
import { libcFunction } from './libc.ts';

const F_OFD_GETLK = 36;
const F_OFD_SETLK = 37;
const F_RDLCK = 0;
const F_WRLCK = 1;
const F_UNLCK = 2;
const PERM_BASE = 100;
const SHARED_BASE = 200;
const NAMES = ['consistent read', 'write', 'write unchanged', 'resize'];
const CONSISTENT_READ = 0;
const WRITE = 1;
const RESIZE = 3;

/** How a command uses an image file. */
export type LockUse = 'inspect' | 'read' | 'write' | 'create' | 'target';

/** Another process holds what this open needs: qemu's two lines (the error, then its hint). */
export class LockConflict extends Error {
  constructor(readonly why: string, readonly path: string) {
    super(`${why}\nIs another process using the image [${path}]?`);
  }
}

/** qemu prints the hint under its error without the program's name (error_append_hint). */
export const isLockHint = (line: string): boolean => /^Is another process using the image \[.*\]\?$/s.test(line);

type Fcntl = (fd: number, cmd: number, ...args: unknown[]) => number;

let fcntl: Fcntl | null | undefined;

function fcntlCall(): Fcntl | null {
  if (fcntl === undefined) fcntl = libcFunction<Fcntl>('int fcntl(int fd, int cmd, ...)');
  return fcntl;
}

/** struct flock (x86_64 and arm64): l_type, l_whence, l_start at 8, l_len at 16, l_pid at 24. */
function flock(type: number, byte: number): Buffer {
  const b = Buffer.alloc(32);
  b.writeInt16LE(type, 0);
  b.writeBigInt64LE(BigInt(byte), 8);
  b.writeBigInt64LE(1n, 16);
  return b;
}

/** Sets a lock of `type` on one byte; false where the call fails (no OFD locks here). */
function setByte(fd: number, byte: number, type: number): boolean {
  const call = fcntlCall();
  return call !== null && call(fd, F_OFD_SETLK, 'void *', flock(type, byte)) === 0;
}

/** Whether another open file holds a lock on `byte` that a write lock would meet. */
function heldElsewhere(fd: number, byte: number): boolean {
  const call = fcntlCall();
  if (call === null) return false;
  const b = flock(F_WRLCK, byte);
  if (call(fd, F_OFD_GETLK, 'void *', b) !== 0) return false;
  return b.readInt16LE(0) !== F_UNLCK;
}

interface LockSet {
  perm: number[];
  unshared: number[];
}

function lockSet(use: LockUse, forceShare: boolean, raw: boolean, dataChild: boolean): LockSet {
  // A raw 'target' is convert's: it never resizes the file it writes; any other target is written as an image is.
  const rawTarget = use === 'target' && raw;
  const perm = rawTarget ? [CONSISTENT_READ, WRITE] : use === 'write' || use === 'target' ? [CONSISTENT_READ, WRITE, RESIZE]
    : use === 'create' ? [WRITE, RESIZE] : use === 'read' ? [CONSISTENT_READ] : [];
  // convert asks its sources to stay unwritten, whatever holds them.
  const convertSource = use === 'read' && lockDefaults.convert;
  const unshared = forceShare ? [] : use === 'create' ? [RESIZE] : convertSource ? [WRITE, RESIZE] : raw ? [] : dataChild ? [RESIZE] : [WRITE, RESIZE];
  return { perm, unshared };
}

const bytesOf = (s: LockSet): number[] => [...s.perm.map((p) => PERM_BASE + p), ...s.unshared.map((p) => SHARED_BASE + p)];

/** Drops every lock byte of `fd` (qemu does before it changes or gives up its permissions). */
export function unlockImage(fd: number): void {
  if (fcntlCall() === null) return;
  for (let p = 0; p < NAMES.length; p++) {
    setByte(fd, PERM_BASE + p, F_UNLCK);
    setByte(fd, SHARED_BASE + p, F_UNLCK);
  }
}

/**
 * Takes qemu's locks for `use` on the open file `fd`, testing first what other processes hold
 * in qemu's order; throws LockConflict (holding nothing) when one conflicts. `path`: the name
 * qemu's hint gives the image.
 */
export function lockImage(fd: number, use: LockUse, forceShare: boolean, path: string, raw = false, dataChild = false): void {
  if (fcntlCall() === null) return;
  const set = lockSet(use, forceShare, raw, dataChild);
  const bytes = bytesOf(set);
  for (const byte of bytes) {
    // No OFD locks on this file system: qemu's locking=auto goes on without them.
    if (!setByte(fd, byte, F_RDLCK)) return unlockImage(fd);
  }
  const conflict = set.perm.find((p) => heldElsewhere(fd, SHARED_BASE + p));
  const unshared = conflict === undefined ? set.unshared.find((p) => heldElsewhere(fd, PERM_BASE + p)) : undefined;
  if (conflict === undefined && unshared === undefined) return;
  unlockImage(fd);
  throw new LockConflict(conflict !== undefined ? `Failed to get "${NAMES[conflict]}" lock` : `Failed to get shared "${NAMES[unshared!]}" lock`, path);
}

/** What the command's images are locked for by default: -U, whether it opens them without I/O (info), and whether it is convert. */
export const lockDefaults = { forceShare: false, noIo: false, convert: false };

/** Sets lockDefaults for a command about to run (or to be started early). */
export function setLockDefaults(command: { name: string; options: ReadonlyMap<string, unknown> }): void {
  // create probes a backing file for its size only, sharing everything (measured: no lock taken).
  lockDefaults.forceShare = command.options.has('force-share') || command.name === 'create';
  lockDefaults.noIo = command.name === 'info' || command.name === 'create';
  lockDefaults.convert = command.name === 'convert';
}

/** Whether a format name is qemu's raw driver (or the file protocol named as one). */
export const isRawFormat = (format: string | undefined): boolean => format === 'raw' || format === 'file';

/** The use of a file the command only reads: info's are opened without I/O. */
export const readUse = (): LockUse => (lockDefaults.noIo ? 'inspect' : 'read');

/**
 * Opens a file a command creates over as qemu's create does: without truncating it until the
 * create's locks are held (a VM's disk named as a target is refused, not emptied first). Throws
 * LockConflict (nothing changed) or the open's own error.
 */
export function openCreating(path: string, flags: number, mode = 0o644): number {
  // Read-write, as qemu's file driver opens it: a read lock needs a file open for reading.
  const fd = openSync(path, (flags & ~(constants.O_TRUNC | constants.O_WRONLY | constants.O_RDONLY)) | constants.O_RDWR, mode);
  try {
    lockImage(fd, 'create', false, path);
    if (flags & constants.O_TRUNC && fstatSync(fd).isFile()) ftruncateSync(fd, 0);
  } catch (e) {
    closeSync(fd);
    throw e;
  }
  return fd;
}

/**
 * convert's new target once created: qemu gives up its create's locks and opens the file to write
 * it ('target'): a raw one, or a file of a new image (`raw` false; `dataChild`: a qcow2's data file
 * or a flat VMDK extent). Nobody else can have taken the file meanwhile (the create's locks keep
 * qemu-img out); a process that did anyway keeps it, and the copy goes on unlocked.
 */
export function lockCreatedTarget(fd: number, path: string, raw = true, dataChild = false): void {
  unlockImage(fd);
  try {
    lockImage(fd, 'target', false, path, raw, dataChild);
  } catch (e) {
    if (!(e instanceof LockConflict)) throw e;
  }
}

/** lockImage that closes `fd` when it throws (a conflict): the caller words the failure. */
export function lockOrClose(fd: number, use: LockUse, forceShare: boolean, path: string, raw: boolean, dataChild = false): void {
  try {
    lockImage(fd, use, forceShare, path, raw, dataChild);
  } catch (e) {
    closeSync(fd);
    throw e;
  }
}

/** Locks a file opened by the trusted side for reading (a backing file, a -b source); closed on a conflict. */
export function lockForReading(fd: number, path: string, format: string | undefined): void {
  lockOrClose(fd, readUse(), lockDefaults.forceShare, path, isRawFormat(format));
}

/**
 * A file opened for reading (`readFd`) reopened for writing as `rwFd` (commit's base, convert -n's
 * extents): qemu's reopen gives the reader's locks up for the writer's. `rwFd` is closed on a conflict.
 */
export function handOverToWriter(readFd: number, rwFd: number, path: string, raw = false, dataChild = false): void {
  unlockImage(readFd);
  lockOrClose(rwFd, 'write', false, path, raw, dataChild);
}
