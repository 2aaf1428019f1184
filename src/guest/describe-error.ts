// How any failure inside an op becomes one line for the user (guest and in-process runs alike):
// an image's own ImageError as is, anything else named but never with a stack trace.
import { ImageError } from '../formats/types.ts';

/** A malformed request from the host (a bug on the trusted side, still reported in one line). */
export class RequestError extends Error {}

/** One line for the user: an image's own error as is, anything else named but not traced. */
export function describeError(e: unknown): string {
  if (e instanceof ImageError) return e.message;
  if (e instanceof RequestError) return `invalid request: ${e.message}`;
  const err = e instanceof Error ? e : new Error(String(e));
  const first = (err.message ?? '').split('\n')[0].trim();
  if (err instanceof RangeError && /allocation failed|array buffer length|out of memory|Cannot allocate/i.test(first)) {
    return `memory limit exceeded (${first})`;
  }
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ERR_ACCESS_DENIED') return `operation not permitted in the sandbox (${first})`;
  return `internal error: ${err.name}: ${first}${code && !first.includes(code) ? ` (${code})` : ''}`;
}

