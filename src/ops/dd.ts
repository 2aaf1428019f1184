// The guest half of `dd` (raw output, or -O <format>: a new image through its format's writer).
// Two phases, one guest launch each, because qemu opens the input and takes its size before it
// creates the output (and an input that fails to open must leave an existing output untouched):
//  - 'open': open the input (asking the host for the files it names) and answer its size;
//  - 'copy': open it again and copy [start, start + length) to offset 0 of the output device the
//    host created, through convert's copy loop (every byte written, as qemu's dd writes zeros too).
import { ImageError, type Extent, type Image, type NodeInfo } from '../formats/types.ts';
import { openTree } from './open-tree.ts';
import { copyToRaw } from './convert/copy.ts';
import { OutputWriteError } from './convert/writer.ts';
import type { Op } from './types.ts';
import { strerror } from '../strerror.ts';
import type { CreatePlan, OpenContext } from '../formats/types.ts';
import { openNewImage } from './convert/to-image.ts';
import { ClusterAligner } from './convert/to-image-copy.ts';

export interface DdOptions {
  phase: 'open' | 'copy';
  format?: string;
  fileName: string;
  unsafeQuirks?: boolean;
  profile?: OpenContext['profile'];
  secrets?: Record<number, string>;
  /** Key options given without driver= (open-tree.ts). */
  keyOptions?: Record<number, string>;
  /** 'copy': the input bytes to copy, [start, start + length), both checked by the host against the size. */
  start?: number;
  length?: number;
  /** -O <not raw>: the new image's format and create plan (the host created its files, role 'output'). */
  image?: { format: string; plan: CreatePlan };
  /** bs: qemu's dd writes one block at a time (the writer allocates as those requests do). */
  bs?: number;
}

const SLICE = 1024 * 1024;

/**
 * -O <format>: the layout, then every byte of the window (zeros too: qemu's dd writes each block
 * as data) through the format's writer, in blocks of `bs` at most 1 MiB, in ascending order.
 */
function copyToNewImage(window: Image, opts: DdOptions, ctx: Parameters<Op>[1]): unknown {
  const writer = openNewImage(opts.image!.format, opts.image!.plan, ctx);
  if (!('write' in writer)) return writer;
  const bs = Number.isSafeInteger(opts.bs) && opts.bs! > 0 ? Math.min(opts.bs!, SLICE) : 512;
  const chunk = Math.max(bs, Math.floor(SLICE / bs) * bs);
  const aligner = new ClusterAligner(writer, window.virtualSize, false);
  const buf = new Uint8Array(chunk);
  for (let pos = 0; pos < window.virtualSize; pos += chunk) {
    const piece = buf.subarray(0, Math.min(chunk, window.virtualSize - pos));
    const known = Math.min(piece.length, window.zeroRun?.(pos, piece.length) ?? 0);
    piece.fill(0, 0, known);
    try {
      if (known < piece.length) window.read(piece.subarray(known), pos + known);
    } catch (e) {
      throw e instanceof ImageError ? readFailure(e) : e;
    }
    writing(() => {
      for (let at = 0; at < piece.length; at += bs) aligner.write(piece.subarray(at, Math.min(piece.length, at + bs)), pos + at);
    });
  }
  writing(() => {
    aligner.finish();
    writer.finish();
  });
  return { copied: window.virtualSize };
}

/** What 'open' answers: the input's format, and its size as qemu's blk_getlength gives it or that it fails. */
export type DdOpenResult = { format: string } & ({ size: number } | { sizeFailed: true });

/**
 * The part [start, start + length) of an image as an image of its own, so that convert's copy
 * loop copies it to offset 0 of the output. It is one run of data: dd writes every byte anyway,
 * and the image's own extents, shifted by a start that need not be sector-aligned, would meet the
 * loop's rounding to whole sectors mid-run. Bytes the image knows are zeros are still not read.
 */
class ImageWindow implements Image {
  readonly format: string;
  constructor(private readonly image: Image, private readonly start: number, readonly virtualSize: number) {
    this.format = image.format;
  }
  info(): NodeInfo {
    return { format: this.format, 'virtual-size': this.virtualSize };
  }
  read(buf: Uint8Array, offset: number): void {
    this.image.read(buf, this.start + offset);
  }
  extent(offset: number, length: number): Extent {
    return { offset, length: Math.min(length, this.virtualSize - offset), kind: 'data', depth: 0 };
  }
  zeroRun(offset: number, length: number): number {
    return this.image.zeroRun?.(this.start + offset, length) ?? 0;
  }
}

/** qemu's dd words a write the file system refused (ENOSPC) by its errno alone. */
function writing(write: () => void): void {
  try {
    write();
  } catch (e) {
    throw writeFailure(e);
  }
}

function writeFailure(e: unknown): unknown {
  const code = e instanceof OutputWriteError ? e.errno : e instanceof ImageError ? undefined : (e as NodeJS.ErrnoException).code;
  return typeof code === 'string' ? new ImageError(`error while writing to output image file: ${strerror(code)}`, code) : e;
}

/**
 * qemu's dd reads and writes plainly: any other failure of the copy is a read failure of the input,
 * worded by its errno alone (a driver's own words never reach qemu's message).
 */
function readFailure(e: ImageError): ImageError {
  return new ImageError(`error while reading from input image file: ${strerror(e.errno ?? 'EIO')}`, e.errno);
}

// Synchronous up to the copy: MissingFilesError must throw at once for answeringMissingFiles.
export const ddOp: Op = (options, ctx) => {
  const opts = options as unknown as DdOptions;
  const image = openTree(ctx, 0, { format: opts.format, fileName: opts.fileName, unsafeQuirks: opts.unsafeQuirks, profile: opts.profile, secrets: opts.secrets ?? {}, keyOptions: opts.keyOptions });
  if (opts.phase === 'open') {
    if (image.sizeFailure) return { format: image.format, sizeFailed: true } satisfies DdOpenResult;
    return { format: image.format, size: image.virtualSize } satisfies DdOpenResult;
  }
  const output = ctx.devices.find((d) => d.spec.role === 'output');
  if (!output) throw new ImageError('no output device');
  // (With -O <format> the output devices are the new image's files, laid out by copyToNewImage.)
  const start = opts.start ?? 0;
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(opts.length) || start < 0 || opts.length! < 0) throw new ImageError('malformed copy range');
  // The input can only have shrunk since 'open' when it is the output itself (of= naming if=),
  // which the host's creation truncated: qemu then reads zeros, which the output already holds.
  const length = Math.max(0, Math.min(opts.length!, image.virtualSize - start));
  if (length === 0 && !opts.image) return Promise.resolve({ copied: 0 });
  const window = new ImageWindow(image, start, length);
  if (opts.image) return copyToNewImage(window, opts, ctx);
  return copyToRaw({ images: [window], output: output.dev, sparseSize: 0, targetIsZero: false }).then(
    () => ({ copied: length }),
    (e: unknown) => {
      if (e instanceof OutputWriteError) throw writeFailure(e);
      throw e instanceof ImageError ? readFailure(e) : e;
    },
  );
};
