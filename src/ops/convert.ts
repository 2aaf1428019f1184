// The guest half of `convert` (raw target). Two phases, one guest launch each:
//  - 'open': open every source (asking the host for backing files, data files, extents) and the
//    -l snapshot view, and answer the virtual sizes, before the host creates anything;
//  - 'copy': the same opening, then the copy into the output device the host created.
// The host may run several 'copy' guests on disjoint ranges of the disk (one per core).
import { ImageError, type OpenContext } from '../formats/types.ts';
import { MissingFilesError } from './open-tree.ts';
import { openSource, snapshotViews, type ConvertSource, type SnapshotChoice } from './convert/sources.ts';
import { copyToRaw } from './convert/copy.ts';
import type { Op } from './types.ts';

export interface ConvertOptions {
  phase: 'open' | 'copy';
  sources: ConvertSource[];
  snapshot?: SnapshotChoice;
  unsafeQuirks?: boolean;
  profile?: OpenContext['profile'];
  /** -S in bytes (0: write everything). */
  sparseSize?: number;
  /** The output reads as zeros already (created by the host, or -n --target-is-zero). */
  targetIsZero?: boolean;
  /** [start, end) of the concatenated disk this guest copies. */
  range?: [number, number];
  progress?: boolean;
  /** Keys of encrypted sources, base64 by device index (host-read --object secrets). */
  secrets?: Record<number, string>;
}

/** What the 'open' phase answers: sizes, or which source failed and how (worded by the host). */
export type ConvertOpenResult = { sizes: number[] } | { failed: { source: number; message: string } } | { snapshotFailed: string };

// Synchronous up to the copy (open errors, MissingFilesError, must throw at once for the
// wrappers in registry.ts); the copy itself is a promise (its writes overlap its reads).
export const convertOp: Op = (options, ctx) => {
  const opts = options as unknown as ConvertOptions;
  if (!Array.isArray(opts.sources) || opts.sources.length === 0) throw new ImageError('no sources');
  const images = [];
  // Sources one at a time, so a failure can name the source qemu would name.
  for (let i = 0; i < opts.sources.length; i++) {
    try {
      images.push(openSource(ctx, opts.sources[i], opts));
    } catch (e) {
      if (e instanceof MissingFilesError || !(e instanceof ImageError) || opts.phase !== 'open') throw e;
      return { failed: { source: i, message: e.message } } satisfies ConvertOpenResult;
    }
  }
  let views = images;
  if (opts.snapshot !== undefined) {
    try {
      views = snapshotViews(images, opts.snapshot);
    } catch (e) {
      if (!(e instanceof ImageError) || opts.phase !== 'open') throw e;
      return { snapshotFailed: e.message } satisfies ConvertOpenResult;
    }
  }
  if (opts.phase === 'open') return { sizes: views.map((v) => v.virtualSize) } satisfies ConvertOpenResult;

  const output = ctx.devices.find((d) => d.spec.role === 'output');
  if (!output) throw new ImageError('no output device');
  const onProgress = opts.progress ? (done: number, total: number) => ctx.emit({ type: 'progress', done, total }) : undefined;
  return copyToRaw({
    images: views,
    output: output.dev,
    sparseSize: opts.sparseSize ?? 4096,
    targetIsZero: !!opts.targetIsZero,
    range: opts.range,
    onProgress,
  }).then((total) => ({ counted: total }));
};
