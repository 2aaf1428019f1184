// glibc's strerror() text for an errno code name (qemu-img prints these), from the one table of
// glibc's texts in strerror-number.ts.
import { constants } from 'node:os';
import { strerrorNumber } from './strerror-number.ts';

/** The text for an errno code; the code itself when it is no errno name (e.g. Node's own codes). */
export function strerror(code: string): string {
  // Read here, not at load: the guest bundle loads node:os only when first used.
  const ERRNO = constants.errno as Readonly<Record<string, number>>;
  const n = Object.prototype.hasOwnProperty.call(ERRNO, code) ? ERRNO[code] : undefined;
  return n === undefined ? code : strerrorNumber(n);
}
