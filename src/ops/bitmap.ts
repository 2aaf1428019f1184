// The guest half of `bitmap`: opens the image (device 0, writable) and, with -b, the source image
// (device 1, read-only), asks the format's bitmap capability for qemu's writes and applies them
// with formats/repair.ts. The host fsyncs after the guest exits. Formats without persistent
// bitmaps fail as qemu's generic layer does, with nothing written.
import { ImageError } from '../formats/types.ts';
import { applyRepair } from '../formats/repair.ts';
import { findDriver } from '../formats/registry.ts';
import type { BitmapActionSpec, BitmapRequest, SourceBitmap } from '../formats/qcow2/bitmap-actions.ts';
import { MissingFilesError, openTree, type OpenTreeOptions } from './open-tree.ts';
import type { OpContext } from './types.ts';

export interface BitmapOptions extends OpenTreeOptions {
  name: string;
  actions: BitmapActionSpec[];
  /** -g as qemu passes it on (a uint32), undefined for the default. */
  granularity?: number;
  nodeName: string;
  /** The -b image (device 1), opened read-only. */
  source?: OpenTreeOptions;
  /** Tests only: stop after this many writes, as if the process died there. */
  stopAfterWrites?: number;
}

export type BitmapResult =
  | { format: string; done: true }
  /** qemu-img's line for the action that failed (the writes before it were made). */
  | { format: string; error: string }
  | { format: string; refused: string }
  /** The -b image would not open (qemu's reason): the image was still opened and closed. */
  | { format: string; 'source-error': string };

/** qemu's generic layer for a format that cannot store bitmaps: nothing is ever found or stored. */
function withoutBitmaps(actions: readonly BitmapActionSpec[], request: Pick<BitmapRequest, 'name' | 'nodeName' | 'granularity'>): string | undefined {
  const first = actions[0];
  if (!first) return undefined;
  let detail = `Dirty bitmap '${request.name}' not found`;
  if (first.kind === 'add') {
    const g = request.granularity;
    if (request.name === '') detail = 'Bitmap name cannot be empty';
    else if (g !== undefined && (g < 512 || (g & (g - 1)) !== 0)) detail = 'Granularity must be power of 2 and at least 512';
    else detail = `Can't store persistent bitmaps to ${request.nodeName}: Operation not supported`;
  }
  return `Operation ${first.kind} on bitmap ${request.name} failed: ${detail}`;
}

function sourceBitmaps(ctx: OpContext, opts: OpenTreeOptions): SourceBitmap[] {
  // qemu-img bitmap opens the source without its backing chain too (a missing one is no error).
  const image = openTree(ctx, 1, { ...opts, noBacking: true });
  const dev = ctx.devices[1]?.dev;
  if (!dev) throw new ImageError('no source device');
  return findDriver(image.format)?.dirtyBitmaps?.sources(dev) ?? [];
}

export function bitmapOp(options: Record<string, unknown>, ctx: OpContext): BitmapResult {
  const opts = options as unknown as BitmapOptions;
  // qemu-img bitmap opens the image without its backing chain (measured: a missing or mistyped
  // backing file is no error there).
  const image = openTree(ctx, 0, { ...opts, noBacking: true });
  const format = image.format;
  let source: SourceBitmap[] | undefined;
  let sourceError: string | undefined;
  try {
    source = opts.source ? sourceBitmaps(ctx, opts.source) : undefined;
  } catch (e) {
    // Files the source names are granted and the op runs again; any other failure is qemu's
    // failed img_open of the source, after the image itself was opened: no action runs.
    if (!(e instanceof ImageError) || e instanceof MissingFilesError) throw e;
    sourceError = e.message;
  }
  const input = ctx.devices[0];
  if (!input) throw new ImageError('no input device');
  const actions = sourceError === undefined ? opts.actions : [];
  const request: BitmapRequest = { name: String(opts.name), actions, granularity: opts.granularity, nodeName: String(opts.nodeName), source };
  const capability = findDriver(format)?.dirtyBitmaps;
  if (!capability) {
    const error = withoutBitmaps(actions, request);
    if (sourceError !== undefined) return { format, 'source-error': sourceError };
    return error === undefined ? { format, done: true } : { format, error };
  }
  const plan = capability.change(input.dev, request);
  if ('refused' in plan) return { format, refused: plan.refused };
  applyRepair(input.dev, plan.steps, { stopAfterWrites: opts.stopAfterWrites });
  if (sourceError !== undefined) return { format, 'source-error': sourceError };
  return plan.error === undefined ? { format, done: true } : { format, error: plan.error };
}
