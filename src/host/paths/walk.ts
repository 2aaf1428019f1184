// The component-by-component walk: resolves every symlink itself (lstat + readlink, as the kernel
// would, `..` included) and refuses as soon as one step lands outside the allowed roots, so a link
// that goes out and comes back is refused too. The result is a symlink-free path and the
// device+inode found there, which the opener checks again on the opened fd.
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

/** The root (and how many leading components it covers) that an absolute path starts in. */
function rootPrefix(parts: string[], roots: AllowRoot[]): { root: AllowRoot; length: number } | undefined {
  let best: { root: AllowRoot; length: number } | undefined;
  for (const root of roots) {
    for (const spelling of root.spellings) {
      if (startsWith(parts, spelling) && (!best || spelling.length > best.length)) best = { root, length: spelling.length };
    }
  }
  return best;
}

function lstat(parts: string[]): BigIntStats {
  try {
    return lstatSync(toPath(parts), { bigint: true });
  } catch (e) {
    throw new WalkError({ kind: 'errno', code: (e as NodeJS.ErrnoException).code ?? 'EIO' });
  }
}

/**
 * Walks an absolute path (as spelled, not normalised) to the file it names. Its leading components
 * must spell an allowed root; from there each step is checked to stay inside the union of roots.
 */
export function walk(absolute: string, roots: AllowRoot[]): WalkResult {
  const parts = absolute.split('/').filter((c) => c !== '' && c !== '.');
  const start = rootPrefix(parts, roots);
  if (!start) throw new WalkError({ kind: 'outside', at: absolute });
  let cur = verifyRoot(start.root);
  // Components still to resolve, next one last (symlink targets are pushed in front).
  const pending = parts.slice(start.length).reverse();
  let links = 0;
  while (pending.length > 0) {
    const name = pending.pop() as string;
    const next = name === '..' ? cur.slice(0, -1) : [...cur, name];
    if (!insideAny(next, roots)) throw new WalkError({ kind: 'outside', at: toPath(next) });
    if (isSpecial(next)) throw new WalkError({ kind: 'special', at: toPath(next) });
    if (name === '..') {
      cur = next;
      continue;
    }
    const st = lstat(next);
    if (st.isSymbolicLink()) {
      if (++links > MAX_LINKS) throw new WalkError({ kind: 'errno', code: 'ELOOP' });
      const target = readlinkSync(toPath(next));
      const targetParts = components(target);
      if (target.startsWith('/')) {
        const jump = rootPrefix(targetParts, roots);
        if (!jump) throw new WalkError({ kind: 'link-outside', link: toPath(next), target });
        cur = verifyRoot(jump.root);
        pending.push(...targetParts.slice(jump.length).reverse());
      } else {
        pending.push(...targetParts.reverse());
      }
      continue;
    }
    if (pending.length > 0 && !st.isDirectory()) throw new WalkError({ kind: 'errno', code: 'ENOTDIR' });
    cur = next;
  }
  const stat = lstat(cur);
  // `cur` is symlink-free by construction; a symlink here means something changed under us.
  if (stat.isSymbolicLink()) throw new WalkError({ kind: 'race', at: toPath(cur) });
  return { resolved: toPath(cur), stat };
}

/**
 * Checks, from '/', that a root's canonical path still has no symlink in it (it was resolved when
 * the policy was built) and is not a special tree; returns its components.
 */
function verifyRoot(root: AllowRoot): string[] {
  if (isSpecial(root.canonical)) throw new WalkError({ kind: 'special', at: toPath(root.canonical) });
  for (let i = 1; i <= root.canonical.length; i++) {
    const st = lstat(root.canonical.slice(0, i));
    if (st.isSymbolicLink()) throw new WalkError({ kind: 'race', at: toPath(root.canonical.slice(0, i)) });
  }
  return root.canonical;
}
