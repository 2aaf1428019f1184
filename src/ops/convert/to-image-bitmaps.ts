// convert --bitmaps, the guest side. Before the target is created (qemu's convert_check_bitmaps):
// the first source must be able to hold persistent bitmaps, and none of them may be
// inconsistent unless --skip-broken-bitmaps. After the copy (convert_copy_bitmaps): each source
// bitmap, in qemu's list order, is added to the new image with its granularity and enabled
// state and gets the source's bits; the writer stores them as qemu does at close.
import { ImageError, type ImageWriter } from '../../formats/types.ts';
import { findDriver } from '../../formats/registry.ts';
import type { LiveBitmap } from '../../formats/qcow2/bitmap-state.ts';
import type { NewBitmap } from '../../formats/qcow2/writer-bitmaps.ts';
import { openSource, type ConvertSource } from './sources.ts';
import type { OpContext } from '../types.ts';
import type { ConvertImageOptions } from './to-image.ts';

/** What the check before creation answers: qemu's refusal, or nothing to say. */
export type BitmapCheckResult = { ok: true } | { lacksSupport: true } | { inconsistent: string };

export interface BitmapCheckOptions extends Pick<ConvertImageOptions, 'unsafeQuirks' | 'profile' | 'secrets'> {
  source: ConvertSource;
  skipBroken: boolean;
}

/** The source's bitmaps as qemu's open loaded them; undefined when its format cannot hold any. */
export function sourceBitmaps(ctx: OpContext, source: ConvertSource, opts: Pick<ConvertImageOptions, 'unsafeQuirks' | 'profile' | 'secrets'>): LiveBitmap[] | undefined {
  const image = openSource(ctx, source, opts);
  const dev = ctx.devices[source.index]?.dev;
  if (!dev) throw new ImageError('no source device');
  return findDriver(image.format)?.dirtyBitmaps?.persistent?.(dev);
}

/** convert_check_bitmaps on the first source. */
export const convertBitmapsCheckOp = (raw: Record<string, unknown>, ctx: OpContext): BitmapCheckResult => {
  const opts = raw as unknown as BitmapCheckOptions;
  const list = sourceBitmaps(ctx, opts.source, opts);
  if (!list) return { lacksSupport: true };
  const broken = opts.skipBroken ? undefined : list.find((b) => b.inconsistent);
  return broken ? { inconsistent: broken.name.toString('utf8') } : { ok: true };
};

/** Whether the new image (device `index`, laid out) can store bitmaps, as qemu asks of the opened target. */
export function targetStoresBitmaps(ctx: OpContext, format: string, writer: ImageWriter): boolean {
  const dev = ctx.devices.find((d) => d.spec.role === 'output')?.dev;
  const capability = findDriver(format)?.dirtyBitmaps;
  return !!dev && !!writer.storeBitmaps && capability?.persistent?.(dev) !== undefined;
}

/** qemu's warning for an inconsistent bitmap that --skip-broken-bitmaps passes over. */
export const skippedWarning = (b: LiveBitmap): string => `warning: Skipping inconsistent bitmap '${b.name.toString('utf8')}'`;

/**
 * convert_copy_bitmaps: the bitmaps the new image gets, in the order qemu stores them, and the
 * warnings for the inconsistent ones skipped (qemu-img's own text, without its program name).
 */
export function bitmapsToCopy(list: readonly LiveBitmap[]): { copy: NewBitmap[]; warnings: string[] } {
  const copy: NewBitmap[] = [];
  const warnings: string[] = [];
  // qemu walks the source's list (newest first) and adds each to the head of the target's list,
  // whose order its close then stores: the reverse of the walk.
  for (const b of list) {
    if (b.inconsistent) {
      warnings.push(skippedWarning(b));
      continue;
    }
    copy.unshift({ name: b.name, granularityBits: b.granularityBits, enabled: b.enabled, bits: b.bits });
  }
  return { copy, warnings };
}
