// The inspector's report and the small helpers its checks share.
import { ImageError } from '../formats/types.ts';
import { WindowMiss } from './window.ts';

/** One named safety check and its outcome. */
export interface CheckResult {
  name: string;
  passed: boolean;
  /** Why it failed (absent when it passed). */
  reason?: string;
}

/** What `inspect` answers. Key order is the JSON output's. */
export interface InspectReport {
  /** qemu's name for the format ('raw' for partitioned disks and unrecognised content), or 'iso'. */
  format: string;
  'virtual-size': number;
  safe: boolean;
  checks: CheckResult[];
  /** Length of the file or stream in bytes. */
  'file-size': number;
  /** Every signature found (more than one makes the file a polyglot). */
  detected: string[];
  /** For raw disks carrying one: 'mbr' or 'gpt'. */
  'partition-table'?: 'mbr' | 'gpt';
}

/** What one format's checks found. */
export interface FormatFindings {
  virtualSize: number;
  checks: CheckResult[];
  /**
   * For formats that store the disk's bytes in place (ISO, fixed VHD, LUKS): the least file size
   * consistent with the virtual size, and what that data is called in the failure message.
   */
  fixed?: { minFileSize: number; what: string };
}

/** The largest virtual size that is not absurd for an upload (1 PiB). */
export const MAX_SANE_VIRTUAL_SIZE = 2 ** 50;

/**
 * Runs one check. `fn` returns a failure reason or undefined; anything it throws fails the check
 * too (an image the inspector cannot parse is not known to be safe), with the error's message.
 */
export function check(name: string, fn: () => string | undefined): CheckResult {
  try {
    const reason = fn();
    return reason === undefined ? { name, passed: true } : { name, passed: false, reason };
  } catch (e) {
    if (e instanceof WindowMiss) return { name, passed: false, reason: e.message };
    if (e instanceof ImageError) return { name, passed: false, reason: `cannot parse the image: ${e.message}` };
    if (e instanceof RangeError) return { name, passed: false, reason: `cannot parse the image: ${e.message}` };
    throw e;
  }
}

/** A 64-bit size as a JS number for the report (exact below 2^53, which is all a sane one can be). */
export function sizeNumber(v: bigint): number {
  return Number(v);
}

/** A name taken from an image, quoted for a reason text (kept short, control characters escaped). */
export function quoted(name: string): string {
  const short = name.length > 200 ? `${name.slice(0, 200)}…` : name;
  return JSON.stringify(short);
}
