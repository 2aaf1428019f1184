// The guest half of `convert -O <format>` (any format whose driver has `create` and `writer`):
// open the sources as convert does (the host has already checked, in its open phase, that they
// open), write the new image's layout into the output files the host created (qemu's
// bdrv_create), open the format's writer on them and copy the disk into it in ascending order,
// then let the writer write its tables.
import { ImageError, NewImageOpenError, type CreatePlan, type ImageWriter, type OpenContext } from '../../formats/types.ts';
import { findDriver } from '../../formats/registry.ts';
import { MissingFilesError, openTree } from '../open-tree.ts';
import { writeLayout } from '../create.ts';
import { openSource, snapshotViews, type ConvertSource, type SnapshotChoice } from './sources.ts';
import { copyToImage } from './to-image-copy.ts';
import { salvageMessages } from './salvage.ts';
import { copyOverBacking } from './to-image-backing.ts';
import { offloadsFrom } from './copy-offload.ts';
import type { LiveBitmap } from '../../formats/qcow2/bitmap-state.ts';
import { bitmapsToCopy, sourceBitmaps, targetStoresBitmaps, skippedWarning } from './to-image-bitmaps.ts';
import type { Op, OpContext } from '../types.ts';

export interface ConvertImageOptions {
  format: string;
  plan: CreatePlan;
  sources: ConvertSource[];
  snapshot?: SnapshotChoice;
  unsafeQuirks?: boolean;
  profile?: OpenContext['profile'];
  secrets?: Record<number, string>;
  sparseSize?: number;
  compressed?: boolean;
  progress?: boolean;
  /** -B: the virtual size of the target's backing file (the host probed it); only the top layer is copied. */
  targetBacking?: { size: number; index?: number; format?: string; fileName?: string };
  /** Only create the image (qemu failed after bdrv_create: a bad -t). */
  layoutOnly?: boolean;
  /** --bitmaps (to-image-bitmaps.ts): copy the first source's persistent bitmaps. */
  bitmaps?: boolean;
  /** With `bitmaps`, into a target that cannot store them: copy the disk, then name the first bitmap qemu fails to create. */
  bitmapsFailAfterCopy?: boolean;
  /** --salvage: unreadable sectors are copied as zeros and reported (salvage.ts). */
  salvage?: boolean;
  /** -C: copy offloading asked for (copy-offload.ts decides where qemu's drivers serve it). */
  copyRange?: boolean;
}

/**
 * qemu walks the source's bitmaps (newest first), skipping inconsistent ones with a warning, and
 * fails on the first it tries to create; none to create, no failure.
 */
function failingBitmap(list: readonly LiveBitmap[]): { bitmapWarnings: string[]; bitmapStoreFailed?: string } {
  const first = list.findIndex((b) => !b.inconsistent);
  const skipped = first < 0 ? list : list.slice(0, first);
  const bitmapWarnings = skipped.map(skippedWarning);
  return first < 0 ? { bitmapWarnings } : { bitmapWarnings, bitmapStoreFailed: list[first].name.toString('utf8') };
}

/** -C into this target: qemu's qcow2 driver takes copy_range unless the image is encrypted; its other writers do not. */
function offloadsTo(opts: ConvertImageOptions): boolean {
  const plan = opts.plan as { luks?: unknown; aes?: unknown };
  return opts.format === 'qcow2' && plan.luks === undefined && plan.aes === undefined;
}

/** `written` with qemu's counted bytes, or the errno that stopped the layout (EFBIG: the file system's limit). */
export type ConvertImageResult =
  | { counted: number; bitmapWarnings?: string[]; bitmapStoreFailed?: string }
  | { failed: string }
  /** --bitmaps into a format (or qcow2 version) without persistent bitmaps: the image was only created. */
  | { bitmapsUnsupported: true }
  /** -c into a format whose driver refuses qemu-img's last, empty compressed write: status 1, no message, the image kept. */
  | { quietFailure: true }
  /** -c into an image without clusters (a flat VMDK): qemu's "invalid cluster size" once it is created, the image kept. */
  | { noClusterSize: true }
  /** The new image that its driver will not open (NewImageOpenError): the image kept. */
  | { openFailed: string };

const errnoOf = (e: unknown): string | undefined => {
  const code = (e as NodeJS.ErrnoException).code;
  return typeof code === 'string' && /^E[A-Z0-9]{1,15}$/.test(code) ? code : undefined;
};

/**
 * bdrv_create into the host's output devices (role 'output', in order: the image, its data file,
 * its extents), then the format's writer on them; `failed` with the errno that stopped the layout
 * (EFBIG: the file system's limit). With `layoutOnly` nothing is opened after the layout.
 */
export function openNewImage(format: string, plan: CreatePlan, ctx: OpContext, layoutOnly = false, reserved?: { range?: [number, number] }): ImageWriter | ConvertImageResult {
  const driver = findDriver(format);
  if (!driver?.create || (!driver.writer && !layoutOnly)) throw new ImageError(`instar cannot write ${format} images`);
  const layout = driver.create.layout(plan);
  const outputs = ctx.devices.filter((d) => d.spec.role === 'output').map((d) => d.dev);
  const extents = layout.extents ?? [];
  const expected = 1 + (layout.dataFile ? 1 : 0) + extents.length;
  if (outputs.length !== expected) throw new ImageError('the host did not grant the files to create');
  const [image, ...rest] = outputs;
  const dataFile = layout.dataFile ? rest.shift() : undefined;
  try {
    // With `reserved`, the range preallocation=falloc reserves is left to the host (it fallocates).
    writeLayout(image, layout.image, reserved !== undefined);
    if (reserved && layout.image.reserve) reserved.range = layout.image.reserve;
    if (layout.dataFile && dataFile) writeLayout(dataFile, layout.dataFile);
    extents.forEach((l, i) => writeLayout(rest[i], l));
  } catch (e) {
    const code = errnoOf(e);
    if (code) return { failed: code };
    throw e;
  }
  if (layoutOnly || !driver.writer) return { counted: 0 };
  try {
    return driver.writer.open({ image, dataFile, extents: rest }, plan);
  } catch (e) {
    if (e instanceof NewImageOpenError) return { openFailed: e.message };
    throw e;
  }
}

/** The writer's last writes (LUKS: the disk's encrypted zeros past the data): a full disk is the host's to word. */
function finished(writer: ImageWriter): { failed: string } | undefined {
  try {
    writer.finish();
  } catch (e) {
    const code = errnoOf(e);
    if (code) return { failed: code };
    throw e;
  }
  return undefined;
}

/**
 * convert -O: the result, with the range of the new image the host is to reserve (falloc, as
 * create's: qemu's file driver fallocates it, unwritten extents the guest cannot make) where the
 * image stays, done or as created.
 */
export const convertImageOp: Op = (raw, ctx) => {
  const reserved: { range?: [number, number] } = {};
  const result = convertImage(raw, ctx, reserved);
  return reserved.range && !('failed' in result) ? { ...result, reserve: reserved.range } : result;
};

function convertImage(raw: Record<string, unknown>, ctx: OpContext, reserved: { range?: [number, number] }): ConvertImageResult {
  const opts = raw as unknown as ConvertImageOptions;
  if (!Array.isArray(opts.sources) || opts.sources.length === 0) throw new ImageError('no sources');
  // Any open failure here was answered in the host's open phase already: it is an error now.
  let views = opts.sources.map((s) => openSource(ctx, s, opts));
  for (let i = 0; i < views.length; i++) {
    if (views[i].sizeFailure) throw new ImageError(`instar cannot convert ${opts.sources[i].fileName}: its size cannot be told`);
  }
  if (opts.snapshot !== undefined) views = snapshotViews(views, opts.snapshot);

  // -B: the target's backing file, granted by the host as one more input (copy-on-write reads it).
  const b = opts.targetBacking;
  const bitmaps = opts.bitmaps ? sourceBitmaps(ctx, opts.sources[0], opts) ?? [] : undefined;
  const writer = openNewImage(opts.format, opts.plan, ctx, opts.layoutOnly, reserved);
  if (!('write' in writer)) return writer;
  // qemu opens the new image's backing file after the image's own checks passed (a LUKS one
  // without its key-secret fails there, the image staying as created).
  let backingImage: ReturnType<typeof openTree> | undefined;
  try {
    backingImage = b?.index !== undefined ? openTree(ctx, b.index, { format: b.format, fileName: b.fileName ?? '', unsafeQuirks: opts.unsafeQuirks, profile: opts.profile, secrets: opts.secrets ?? {} }) : undefined;
  } catch (e) {
    if (e instanceof ImageError && !(e instanceof MissingFilesError)) return { openFailed: `Could not open backing file: ${e.message}` };
    throw e;
  }
  if (backingImage) writer.readBacking?.(backingImage);
  const storesBitmaps = !bitmaps || targetStoresBitmaps(ctx, opts.format, writer);
  if (!storesBitmaps && !opts.bitmapsFailAfterCopy) return { bitmapsUnsupported: true };
  const onProgress = opts.progress ? (done: number, total: number) => ctx.emit({ type: 'progress', done, total }) : undefined;
  const sparseSize = opts.sparseSize ?? 4096;
  const backing = opts.targetBacking;
  if (backing && (views.length !== 1 || !Number.isSafeInteger(backing.size))) throw new ImageError('instar cannot convert these sources over a backing file');
  // qemu takes -c's unit from the new image's cluster size, which a flat VMDK does not have.
  if (opts.compressed && !writer.writeCompressed) return { noClusterSize: true };
  const compressed = opts.compressed || writer.needsCompressedWrites === true;
  const counted = backing
    ? copyOverBacking({ image: views[0], writer, sparseSize, backingSize: backing.size, backingImage, onProgress, compressed, salvage: opts.salvage ? salvageMessages(ctx) : undefined })
    : copyToImage({ images: views, writer, sparseSize, compressed, onProgress, salvage: opts.salvage ? salvageMessages(ctx) : undefined, offload: opts.copyRange === true && offloadsTo(opts) && offloadsFrom(views) });
  if (!storesBitmaps) {
    const failed = finished(writer);
    return failed ?? { counted, ...failingBitmap(bitmaps!) };
  }
  const copied = bitmaps && bitmapsToCopy(bitmaps);
  if (copied) writer.storeBitmaps!(copied.copy);
  const failed = finished(writer);
  if (failed) return failed;
  if (compressed && writer.compressedEndFails) return { quietFailure: true };
  return (copied ? { counted, bitmapWarnings: copied.warnings } : { counted }) satisfies ConvertImageResult;
}
