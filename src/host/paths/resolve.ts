// openReferenced: the one way the host opens a file an image names (backing file, data file,
// extent). Order matters: everything that can be decided from the name is decided before the file
// system is touched, and a refused file is never opened (the tests watch this with strace).
import { closeSync, constants, fstatSync, openSync, type BigIntStats } from 'node:fs';
import { hasProtocol, referencedPath, type ReferenceRole } from './combine.ts';
import { makeRoots, walk, WalkError, components, toPath, spelledInside, type WalkFailure } from './walk.ts';
import { refusal, openFailure, quote, describeType, OUTSIDE_HINT, POLICY_TAG } from './messages.ts';
import type { ChainState, OpenedReference, PathPolicy } from './policy.ts';

export { PathRefusedError, ReferenceOpenError } from './policy.ts';

/** Longest name accepted (Linux PATH_MAX, in bytes). */
export const MAX_NAME_BYTES = 4096;

// O_NONBLOCK: a FIFO swapped in after the walk must not block the open; no effect on regular files.
const OPEN_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY;

/** Starts a chain at the image given on the command line; pass its fd so a loop back to it is seen. */
export function startChain(top: string, topFd?: number): ChainState {
  const chain: ChainState = { visited: new Set(), depth: 0, top };
  if (topFd !== undefined) chain.visited.add(fileId(fstatSync(topFd, { bigint: true })));
  return chain;
}

export function fileId(st: BigIntStats): string {
  return `${st.dev}:${st.ino}`;
}

/** The directory qemu considers an image to be in, as spelled ("a.qcow2" → ".", "/a" → "/"). */
export function directoryOf(image: string): string {
  const slash = image.lastIndexOf('/');
  if (slash < 0) return '.';
  return slash === 0 ? '/' : image.slice(0, slash);
}

/**
 * Opens the file `name` that the image `referrer` names in the given role, or throws
 * PathRefusedError (policy) / ReferenceOpenError (the allowed file cannot be opened). For a backing
 * file, a success records it in `chain` (visited, depth). The caller closes the returned fd.
 */
export function openReferenced(name: string, referrer: string, role: ReferenceRole, policy: PathPolicy, chain: ChainState): OpenedReference {
  chain.top ??= referrer;
  if (role === 'backing' && chain.depth >= policy.maxDepth) {
    throw refusal(role, 'depth', `the backing chain is longer than ${policy.maxDepth} files ${POLICY_TAG}`);
  }
  checkName(name, role);
  const path = referencedPath(referrer, name, role);
  checkName(path, role);

  const cwd = process.cwd();
  const roots = makeRoots([directoryOf(chain.top), ...policy.allow], cwd);
  const absolute = path.startsWith('/') ? path : `${cwd}/${path}`;
  const lexical = toPath(normalise(components(absolute)));
  if (!spelledInside(components(lexical), roots)) {
    throw refusal(role, 'outside', `${quote(path)}${lexical === path ? '' : ` (${quote(lexical)})`} is outside the allowed paths ${OUTSIDE_HINT}`);
  }

  let found;
  try {
    found = walk(absolute, roots);
  } catch (e) {
    if (e instanceof WalkError) throw walkRefusal(e.failure, path, role);
    throw e;
  }
  const { stat, resolved } = found;
  if (!stat.isFile()) {
    throw refusal(role, 'not-regular', `${quote(path)} is ${describeType(stat)}, not a regular file; instar opens only regular files an image names ${POLICY_TAG}`);
  }
  const id = fileId(stat);
  if (chain.visited.has(id)) {
    if (role === 'backing') throw refusal(role, 'loop', `Backing file ${quote(path)} creates an infinite loop.`);
    throw refusal(role, 'loop', `${quote(path)} is an image of this chain and cannot also be its ${role === 'extent' ? 'extent' : 'data file'} ${POLICY_TAG}`);
  }

  const fd = openVerified(resolved, id, path, role);
  if (role === 'backing') {
    chain.visited.add(id);
    chain.depth++;
  }
  return { fd, path, resolved, id };
}

/** Refusals decided from the name alone. */
function checkName(name: string, role: ReferenceRole): void {
  if (name === '') throw refusal(role, 'bad-name', `the name is empty ${POLICY_TAG}`);
  if (Buffer.byteLength(name) > MAX_NAME_BYTES) {
    throw refusal(role, 'bad-name', `the name ${quote(name)} is longer than ${MAX_NAME_BYTES} bytes ${POLICY_TAG}`);
  }
  if (/[\x00-\x1f\x7f]/.test(name)) throw refusal(role, 'bad-name', `the name ${quote(name)} contains control characters ${POLICY_TAG}`);
  if (hasProtocol(name)) {
    const protocol = name.slice(0, name.indexOf(':'));
    throw refusal(role, 'protocol', `${quote(name)} names the protocol '${protocol}:'; instar opens only plain files an image names ${POLICY_TAG}`);
  }
}

/** Lexical normalisation for the early check only ('..' drops a component); the walk is the real one. */
function normalise(parts: string[]): string[] {
  const out: string[] = [];
  for (const c of parts) {
    if (c === '..') out.pop();
    else out.push(c);
  }
  return out;
}

function walkRefusal(failure: WalkFailure, path: string, role: ReferenceRole): Error {
  switch (failure.kind) {
    case 'outside':
      return refusal(role, 'outside', `${quote(path)} leads outside the allowed paths (at ${quote(failure.at)}) ${OUTSIDE_HINT}`);
    case 'link-outside':
      return refusal(role, 'outside', `${quote(path)} goes through the symbolic link ${quote(failure.link)} to ${quote(failure.target)}, outside the allowed paths ${OUTSIDE_HINT}`);
    case 'special':
      return refusal(role, 'special-file', `${quote(path)} leads into ${quote(failure.at)}; instar never opens files under /proc, /sys or /dev that an image names ${POLICY_TAG}`);
    case 'race':
      return refusal(role, 'race', `${quote(path)} changed while it was being checked (${quote(failure.at)}) ${POLICY_TAG}`);
    case 'errno':
      return openFailure(role, path, failure.code);
  }
}

/** Opens the walked file without following a last symlink and checks it is the file the walk saw (exported for tests). */
export function openVerified(resolved: string, id: string, path: string, role: ReferenceRole): number {
  let fd: number;
  try {
    fd = openSync(resolved, OPEN_FLAGS);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? 'EIO';
    // ELOOP under O_NOFOLLOW: a symlink replaced the file after the walk.
    if (code === 'ELOOP') throw refusal(role, 'race', `${quote(path)} changed while it was being checked ${POLICY_TAG}`);
    throw openFailure(role, path, code);
  }
  const st = fstatSync(fd, { bigint: true });
  if (!st.isFile() || fileId(st) !== id) {
    closeSync(fd);
    throw refusal(role, 'race', `${quote(path)} changed while it was being checked ${POLICY_TAG}`);
  }
  return fd;
}
