// How any failure inside an op becomes one line for the user (guest and in-process runs alike):
// an image's own ImageError as is, anything else named but never with a stack trace.
import { ImageError } from '../formats/types.ts';
import { MAX_WARNINGS, MAX_WARNING_TEXT, type GuestWarning } from '../protocol/messages.ts';

/**
 * The lines qemu prints before an error: a driver's error_report lines (`reports`, after the
 * program name) and a line of its own (`warning`, e.g. qcow2's corruption notice, as it is).
 */
export function errorWarnings(e: unknown): GuestWarning[] {
  if (!(e instanceof ImageError)) return [];
  const { reports, warning } = e as ImageError & { reports?: unknown; warning?: unknown };
  const out: GuestWarning[] = [];
  if (Array.isArray(reports)) for (const r of reports) if (typeof r === 'string') out.push({ text: r, prefixed: true });
  if (typeof warning === 'string') out.push({ text: warning, prefixed: false });
  return out;
}

/** An op's warnings: the first MAX_WARNINGS, each cut to MAX_WARNING_TEXT, repeats dropped. */
export class WarningList {
  readonly list: GuestWarning[] = [];
  add(w: GuestWarning): void {
    const text = w.text.length > MAX_WARNING_TEXT ? w.text.slice(0, MAX_WARNING_TEXT) : w.text;
    if (this.list.length >= MAX_WARNINGS || this.list.some((o) => o.text === text && o.prefixed === w.prefixed && o.source === w.source)) return;
    this.list.push({ text, prefixed: w.prefixed, ...(w.unterminated === true ? { unterminated: true } : {}), ...(w.source !== undefined ? { source: w.source } : {}) });
  }
}

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

