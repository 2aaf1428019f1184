// convert --salvage: a source read or block status that fails does not end the copy.
// - A failed read: qemu-img reads the failed chunk again one 512-byte sector at a time, leaves each
//   sector that still fails as zeros and warns once per such sector, naming its offset in the
//   source. A read of a range fails here exactly when one of its sectors does, so halving the
//   failed range until single sectors are left finds the same sectors with far fewer reads.
// - A failed block status: qemu asks again for a quarter of the range from the same offset, down
//   to one sector, which it then warns about and takes as data (its read usually fails next).
//   copy.ts runs() does that; qemu walks the whole disk once before copying (to count) and once
//   while copying, so those warnings come twice.
import { ImageError, type Image } from '../../formats/types.ts';
import { MAX_UNREADABLE_BYTES } from '../../protocol/messages.ts';
import type { OpContext } from '../types.ts';

const SECTOR = 512;

/**
 * Failed sectors of one source, [offset, offset + length), all failing for the same reason
 * (qemu's strerror text); `notice`: what the driver printed on the way (qcow2's "Image is
 * corrupt" line, once per image), printed before them.
 */
export type UnreadableReport = (offset: number, length: number, reason: string, notice?: string) => void;

/** Where --salvage reports what it skipped: failed reads, failed block-status requests. */
export interface Salvage {
  read: UnreadableReport;
  status: UnreadableReport;
}

/**
 * Runs `fn` with no stack traces captured: --salvage meets a failure per sector (and qemu's
 * block-status retries several), and capturing each error's stack would cost most of the copy.
 */
export function withoutStacks<T>(fn: () => T): T {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    return fn();
  } finally {
    Error.stackTraceLimit = limit;
  }
}

/** The driver's notice an error carries (qcow2's corruption line), if any. */
export const noticeOf = (e: unknown): string | undefined => {
  const warning = (e as { warning?: unknown }).warning;
  return typeof warning === 'string' ? warning : undefined;
};

/**
 * Reads `buf.length` bytes of `image` at `pos` (a sector boundary) into `buf`; the sectors that
 * cannot be read become zeros and are reported in ascending order, neighbours with the same
 * reason as one range. Errors other than ImageError still end the copy.
 */
export function salvageRead(image: Image, buf: Uint8Array, pos: number, report: UnreadableReport): void {
  let pending: { offset: number; length: number; reason: string; notice?: string } | undefined;
  const failed = (offset: number, length: number, reason: string, notice: string | undefined) => {
    if (pending && notice === undefined && pending.reason === reason && pending.offset + pending.length === offset) {
      pending.length += length;
      return;
    }
    if (pending) report(pending.offset, pending.length, pending.reason, pending.notice);
    pending = { offset, length, reason, notice };
  };
  const attempt = (from: number, to: number): void => {
    const part = buf.subarray(from - pos, to - pos);
    try {
      image.read(part, from);
      return;
    } catch (e) {
      if (!(e instanceof ImageError)) throw e;
      if (to - from <= SECTOR) {
        part.fill(0);
        failed(from, SECTOR, e.message, noticeOf(e));
        return;
      }
    }
    const middle = from + Math.ceil((to - from) / 2 / SECTOR) * SECTOR;
    attempt(from, Math.min(middle, to));
    if (middle < to) attempt(middle, to);
  };
  withoutStacks(() => attempt(pos, pos + buf.length));
  if (pending) report(pending.offset, pending.length, pending.reason, pending.notice);
}

/** The reports as `unreadable` messages to the host, each at most MAX_UNREADABLE_BYTES long. */
export function salvageMessages(ctx: Pick<OpContext, 'emit'>): Salvage {
  const messages = (kind: 'read' | 'block-status'): UnreadableReport => (offset, length, reason, notice) => {
    for (let at = offset; at < offset + length; at += MAX_UNREADABLE_BYTES) {
      const first = at === offset && notice !== undefined ? { notice } : {};
      ctx.emit({ type: 'unreadable', kind, offset: at, length: Math.min(MAX_UNREADABLE_BYTES, offset + length - at), reason, ...first });
    }
  };
  return { read: messages('read'), status: messages('block-status') };
}
