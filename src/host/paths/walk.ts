// The component-by-component walk: resolves every symlink itself (lstat + readlink, as the kernel
// would, `..` included) and refuses as soon as one step would look at a place outside the allowed
// roots, so a link that goes out and comes back is refused too. The result is a symlink-free path
// and the device+inode found there, which the opener checks again on the opened fd.
import { lstatSync, readlinkSync, realpathSync, type BigIntStats } from 'node:fs';
import { resolve } from 'node:path';

/** One allowed directory: its symlink-free path, and the spellings that lead to it. */
export interface AllowRoot {
  canonical: string[];
  /** Component lists (canonical first) a path may start with to be inside this root. */
  spellings: string[][];
}

/** Why the walk stopped without a file; resolve.ts turns these into user messages. */
export type WalkFailure =
  | { kind: 'outside'; at: string }
  | { kind: 'link-outside'; link: string; target: string }
  | { kind: 'special'; at: string }
  | { kind: 'race'; at: string }
  | { kind: 'errno'; code: string };

export class WalkError extends Error {
  constructor(readonly failure: WalkFailure) {
    super(failure.kind);
  }
}

export interface WalkResult {
  /** Symlink-free absolute path of the file found. */
  resolved: string;
  /** lstat of `resolved` (never a symlink). */
  stat: BigIntStats;
}

/** The kernel's limit on symlinks followed in one lookup (ELOOP beyond it). */
const MAX_LINKS = 40;
/** Trees holding kernel objects rather than files: never opened, whatever the allowlist says. */
const SPECIAL_TREES = [['proc'], ['sys'], ['dev']];

export function components(path: string): string[] {
  return path.split('/').filter((c) => c !== '' && c !== '.');
}

export function toPath(parts: string[]): string {
  return '/' + parts.join('/');
}

function startsWith(parts: string[], prefix: string[]): boolean {
  return prefix.length <= parts.length && prefix.every((c, i) => parts[i] === c);
}

export function isSpecial(parts: string[]): boolean {
  return SPECIAL_TREES.some((tree) => startsWith(parts, tree));
}

export function insideAny(parts: string[], roots: AllowRoot[]): boolean {
  return roots.some((root) => startsWith(parts, root.canonical));
}

/** True when a path starts with one of the spellings of a root (the lexical check). */
export function spelledInside(parts: string[], roots: AllowRoot[]): boolean {
  return roots.some((root) => root.spellings.some((spelling) => startsWith(parts, spelling)));
}

/**
 * Builds the roots from directory names as the user gave them (relative to `cwd`). realpath runs
 * in libc (kernel semantics for `..` after a symlink); a lexically normalised spelling is kept only
 * when it leads to the same place. Entries that do not resolve allow nothing.
 */
export function makeRoots(dirs: string[], cwd: string): AllowRoot[] {
  const roots: AllowRoot[] = [];
  for (const dir of dirs) {
    let canonical: string;
    try {
      canonical = realpathSync.native(dir.startsWith('/') ? dir : `${cwd}/${dir}`);
    } catch {
      continue;
    }
    const spelled = resolve(cwd, dir);
    const spellings = [components(canonical)];
    try {
      if (spelled !== canonical && realpathSync.native(spelled) === canonical) spellings.push(components(spelled));
    } catch { /* the lexical spelling leads nowhere: only the canonical one counts */ }
    roots.push({ canonical: components(canonical), spellings });
  }
  return roots;
}

/**
 * True when `parts` is an ancestor of some spelling of a root, or a spelling itself (a symlinked
 * spelling is a link the walk follows): a place the walk may pass on its way into a root.
 */
function onTheWayIn(parts: string[], roots: AllowRoot[]): boolean {
  return roots.some((root) => root.spellings.some((spelling) => startsWith(spelling, parts)));
}

function lstat(parts: string[]): BigIntStats {
  try {
    return lstatSync(toPath(parts), { bigint: true });
  } catch (e) {
    throw new WalkError({ kind: 'errno', code: (e as NodeJS.ErrnoException).code ?? 'EIO' });
  }
}

/**
 * Walks an absolute path (as spelled, not normalised) from '/' to the file it names, resolving
 * symlinks and '..' as the kernel does. Invariant: the walk examines (lstat, readlink) only places
 * inside an allowed root or on the way down to one (a proper ancestor of a root as the user spelled
 * it); any other step is refused before it is looked at. So a symlink out of the allowlist is
 * refused even if its target would come back, while "img/../base/b" is fine when base is allowed
 * (the '..' passes through a parent on the way into another allowed directory, touching nothing).
 */
export function walk(absolute: string, roots: AllowRoot[]): WalkResult {
  let cur: string[] = [];
  // Components still to resolve, next one last (a symlink's target is pushed in front of the rest).
  const pending = components(absolute).reverse();
  let links = 0;
  let lastLink: { link: string; target: string } | undefined;
  const refuseOutside = (at: string[]): never => {
    throw new WalkError(lastLink ? { kind: 'link-outside', ...lastLink } : { kind: 'outside', at: toPath(at) });
  };
  while (pending.length > 0) {
    const name = pending.pop() as string;
    // The parent of an allowed place is allowed or on the way in, so '..' itself is never refused.
    const next = name === '..' ? cur.slice(0, -1) : [...cur, name];
    if (!insideAny(next, roots) && !onTheWayIn(next, roots)) refuseOutside(next);
    if (isSpecial(next)) throw new WalkError({ kind: 'special', at: toPath(next) });
    if (name === '..') {
      cur = next;
      continue;
    }
    const st = lstat(next);
    if (st.isSymbolicLink()) {
      if (++links > MAX_LINKS) throw new WalkError({ kind: 'errno', code: 'ELOOP' });
      const target = readlinkSync(toPath(next));
      // Links on the way in belong to the user's own spelling of a root; blame only links inside.
      if (insideAny(next, roots)) lastLink = { link: toPath(next), target };
      if (target.startsWith('/')) cur = [];
      pending.push(...components(target).reverse());
      continue;
    }
    if (pending.length > 0 && !st.isDirectory()) throw new WalkError({ kind: 'errno', code: 'ENOTDIR' });
    cur = next;
  }
  if (!insideAny(cur, roots)) refuseOutside(cur);
  const stat = lstat(cur);
  // `cur` is symlink-free by construction; a symlink here means something changed under us.
  if (stat.isSymbolicLink()) throw new WalkError({ kind: 'race', at: toPath(cur) });
  return { resolved: toPath(cur), stat };
}
