// convert --salvage: a source read that fails does not end the copy. qemu-img then reads the
// failed chunk again one 512-byte sector at a time, leaves each sector that still fails as zeros
// and warns once per such sector, naming its offset in the source. A read of a range fails here
// exactly when one of its sectors does, so halving the failed range until single sectors are
// left finds the same sectors with far fewer reads than qemu's sector-by-sector retry.
import { ImageError, type Image } from '../../formats/types.ts';
import { MAX_UNREADABLE_BYTES } from '../../protocol/messages.ts';
import type { OpContext } from '../types.ts';

const SECTOR = 512;

/** Failed sectors of one source, [offset, offset + length), all failing for the same reason (qemu's strerror text). */
export type UnreadableReport = (offset: number, length: number, reason: string) => void;

/**
 * Reads `buf.length` bytes of `image` at `pos` (a sector boundary) into `buf`; the sectors that
 * cannot be read become zeros and are reported in ascending order, neighbours with the same
 * reason as one range. Errors other than ImageError still end the copy.
 */
export function salvageRead(image: Image, buf: Buffer, pos: number, report: UnreadableReport): void {
  let pending: { offset: number; length: number; reason: string } | undefined;
  const failed = (offset: number, length: number, reason: string) => {
    if (pending && pending.reason === reason && pending.offset + pending.length === offset) {
      pending.length += length;
      return;
    }
    if (pending) report(pending.offset, pending.length, pending.reason);
    pending = { offset, length, reason };
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
        failed(from, SECTOR, e.message);
        return;
      }
    }
    const middle = from + Math.ceil((to - from) / 2 / SECTOR) * SECTOR;
    attempt(from, Math.min(middle, to));
    if (middle < to) attempt(middle, to);
  };
  attempt(pos, pos + buf.length);
  if (pending) report(pending.offset, pending.length, pending.reason);
}

/** The report as `unreadable` messages to the host, each at most MAX_UNREADABLE_BYTES long. */
export function unreadableMessages(ctx: Pick<OpContext, 'emit'>, kind: 'read' | 'block-status'): UnreadableReport {
  return (offset, length, reason) => {
    for (let at = offset; at < offset + length; at += MAX_UNREADABLE_BYTES) {
      ctx.emit({ type: 'unreadable', kind, offset: at, length: Math.min(MAX_UNREADABLE_BYTES, offset + length - at), reason });
    }
  };
}
