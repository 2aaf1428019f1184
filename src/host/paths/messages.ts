// User-facing wording of refusals. Policy refusals say that instar's policy (not qemu) refused and
// how to allow a file; failures to open an allowed file are worded exactly as qemu-img words them.
import { strerror } from '../../strerror.ts';
import type { BigIntStats } from 'node:fs';
import type { ReferenceRole } from './combine.ts';
import { PathRefusedError, ReferenceOpenError, type RefusalKind } from './policy.ts';

export const POLICY_TAG = "(instar's path policy)";
export const OUTSIDE_HINT = "(instar's path policy; allow it with --allow-path)";

/** The prefix qemu-img puts before a failure to open a file of this role ("" for extents, data files). */
const QEMU_PREFIX: Record<ReferenceRole, string> = {
  'backing': 'Could not open backing file: ',
  'data-file': '',
  'extent': '',
};

/** Policy refusals always say which kind of file was refused. */
const POLICY_PREFIX: Record<ReferenceRole, string> = {
  'backing': 'Could not open backing file: ',
  'data-file': 'Could not open data file: ',
  'extent': 'Could not open extent file: ',
};


const MAX_SHOWN = 120;

/** A name quoted for a one-line message: control characters escaped, very long names shortened. */
export function quote(name: string): string {
  let shown = name.replace(/[\x00-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
  if (shown.length > MAX_SHOWN) shown = `${shown.slice(0, MAX_SHOWN)}...`;
  return `'${shown}'`;
}

export function refusal(role: ReferenceRole, kind: RefusalKind, reason: string): PathRefusedError {
  return new PathRefusedError(POLICY_PREFIX[role] + reason, kind, reason);
}

export function openFailure(role: ReferenceRole, path: string, code: string): ReferenceOpenError {
  const reason = `Could not open ${quote(path)}: ${strerror(code)}`;
  return new ReferenceOpenError(QEMU_PREFIX[role] + reason, reason, code);
}

/** Another process holds the file (qemu's lock bytes, image-locks.ts): `message` is qemu's two lines. */
export function lockFailure(role: ReferenceRole, message: string): ReferenceOpenError {
  return new ReferenceOpenError(QEMU_PREFIX[role] + message, message, 'EAGAIN');
}

export function describeType(st: BigIntStats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  return 'a special file';
}
