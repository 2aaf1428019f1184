// The guest half of `rebase`: opens the image as qemu-img rebase does (read-write; with -u without
// its backing chain), then asks the format's driver for the writes that name the new backing file
// and applies them (formats/repair.ts). Safe mode first copies what the old backing file showed
// where the new one differs (rebase-safe.ts).
import { ImageError } from '../formats/types.ts';
import { findDriver } from '../formats/registry.ts';
import { COMPRESSING_FORMATS } from '../formats/compressing.ts';
import { applyRepair } from '../formats/repair.ts';
import { openTree, type OpenTreeOptions } from './open-tree.ts';
import { safeRebase, type ProgressRuns } from './rebase-safe.ts';
import type { OpContext } from './types.ts';

export interface RebaseOptions extends OpenTreeOptions {
  /** -u: only the name changes. */
  unsafe: boolean;
  /** The new backing file name; absent (or '') removes the backing file. */
  backing?: string;
  backingFormat?: string;
  /** -p: safe mode's progress follows qemu's copy loop, which instar does not run. */
  progress?: boolean;
  /** -F named no driver: qemu says so after opening the image (the host words it). */
  invalidBackingFormat?: boolean;
  /** The host wants the open's own errors only (it words a failure of its own next). */
  openOnly?: boolean;
  /** Safe mode: qemu 8.2+'s copy loop (a chunk is not cut at the old backing file's end). */
  clusterLoop?: boolean;
  /** -c (8.2+): copied clusters compressed (qcow2 tops); other formats without compression refused as qemu refuses them. */
  compress?: boolean;
  /** Tests only: stop after this many writes (crash simulation). */
  stopAfterWrites?: number;
}

export type RebaseResult = ({ progress?: ProgressRuns }) & (
  | { format: string; done: true }
  /** qemu's driver refused the change: the errno whose strerror qemu prints. */
  | { format: string; errno: 'ENOSPC' | 'EINVAL' | 'ENOTSUP' }
  /** -c on a format whose driver cannot write compressed clusters: qemu's message, after the open. */
  | { format: string; cannotCompress: true }
  /** qemu's "Invalid format name" for -F, after the image opened. */
  | { format: string; invalidBackingFormat: true }
  /** qemu 8.2+ asks the driver for its (sub)cluster size next; parallels' has no answer. */
  | { format: string; noDriverInfo: true }
  /** openOnly: the image opened and passed qemu's checks before the new backing file's. */
  | { format: string; opened: true }
  /** instar will not do this (qemu would): nothing was written. */
  | { format: string; refused: string }
  /** Safe mode: the new backing file did not open (the reason, from the guest: escaped by the host). */
  | { format: string; newBackingFailed: string });

export function rebaseOp(options: Record<string, unknown>, ctx: OpContext): RebaseResult {
  const opts = options as unknown as RebaseOptions;
  const unsafe = opts.unsafe === true;
  const image = openTree(ctx, 0, { ...opts, noBacking: unsafe });
  const format = image.format;
  // qemu-img 8.2+ checks -c right after the open, before -F's name and either mode's work.
  if (opts.compress && !COMPRESSING_FORMATS.has(format)) return { format, cannotCompress: true };
  if (opts.invalidBackingFormat) return { format, invalidBackingFormat: true };
  // bdrv_get_info fails on a driver without it (of those that open for writing, parallels only):
  // "could not get block driver info", in either mode, before the new backing file opens.
  if (opts.clusterLoop && format === 'parallels') return { format, noDriverInfo: true };
  if (opts.openOnly) return { format, opened: true };
  const input = ctx.devices[0];
  if (!input?.spec.writable) throw new ImageError('the image was not opened for writing');
  const backing = typeof opts.backing === 'string' && opts.backing !== '' ? Buffer.from(opts.backing) : undefined;
  const backingFormat = backing && typeof opts.backingFormat === 'string' ? Buffer.from(opts.backingFormat) : undefined;
  // Safe mode copies what the old backing chain showed (rebase-safe.ts); with no backing file
  // before or after and no progress to show, qemu changes the header alone, as -u does.
  if (!unsafe && (backing || opts.progress === true || image.info()['backing-filename'] !== undefined)) {
    return safeRebase(opts, ctx, image);
  }
  const changeBacking = findDriver(format)?.changeBacking;
  // The block layer requires a named format before it asks the driver (bdrv_change_backing_file).
  if (!changeBacking) return { format, errno: backing && !backingFormat ? 'EINVAL' : 'ENOTSUP' };
  const plan = changeBacking(input.dev, backing, backingFormat);
  if ('refused' in plan) return { format, refused: plan.refused };
  const stopAfterWrites = typeof opts.stopAfterWrites === 'number' ? opts.stopAfterWrites : undefined;
  if ('errno' in plan) {
    applyRepair(input.dev, plan.steps ?? [], { stopAfterWrites });
    return { format, errno: plan.errno };
  }
  applyRepair(input.dev, plan.steps, { stopAfterWrites });
  return { format, done: true };
}
