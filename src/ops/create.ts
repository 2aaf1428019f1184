// `create` in the guest, in two ops. `create-backing` opens the backing file a new image names
// (untrusted bytes: qemu opens it to learn its format and size) with everything below it;
// `create` writes the new image's layout (the format's pure create code) through the output fds
// the host created: ftruncate to the final length, then the writes, in order.
import { ImageError, type BlockDevice, type CreateFileLayout, type CreatePlan } from '../formats/types.ts';
import { findDriver } from '../formats/registry.ts';
import { openTree } from './open-tree.ts';
import type { OpContext } from './types.ts';
import type { OpenContext } from '../formats/types.ts';

export interface CreateBackingOptions {
  /** -F: the backing file's format (detection otherwise, as qemu probes). */
  format?: string;
  /** The backing file's name as qemu combined it (messages). */
  fileName: string;
  profile?: OpenContext['profile'];
  unsafeQuirks?: boolean;
  /** Open this file alone (BDRV_O_NO_BACKING), as the VMDK driver does to read its parent's CID. */
  noBacking?: boolean;
}

/** What the host learns about the backing file: all it prints or uses. */
export interface CreateBackingResult {
  format: string;
  virtualSize: number;
  /** bdrv_getlength failed with this errno (the size is meaningless then). */
  sizeErrno?: number;
  /** A VMDK's content ID (a VMDK child names it as its parent CID). */
  cid?: number;
}

export function createBackingOp(raw: Record<string, unknown>, ctx: OpContext): CreateBackingResult {
  const options = raw as unknown as CreateBackingOptions;
  const image = openTree(ctx, 0, {
    format: options.format, fileName: options.fileName, profile: options.profile, unsafeQuirks: options.unsafeQuirks, noBacking: options.noBacking,
  });
  const cid = image.format === 'vmdk' ? image.info()['format-specific']?.data.cid : undefined;
  const failure = image.sizeFailure;
  const result: CreateBackingResult = failure ? { format: image.format, virtualSize: 0, sizeErrno: failure.errno } : { format: image.format, virtualSize: image.virtualSize };
  if (typeof cid === 'number') result.cid = cid;
  return result;
}

export interface CreateOptions {
  format: string;
  plan: CreatePlan;
}

/**
 * `written` (with `reserve`: the image's range the host is to reserve, preallocation=falloc), or
 * the errno that stopped the writes (EFBIG: the file system's size limit).
 */
export type CreateResult = { written: true; reserve?: [number, number] } | { failed: string };

const ZERO_CHUNK = 1024 * 1024;

/** One file of a new image's layout: its length set, then its bytes (every byte with `allocate`). convert -O lays out its target the same way. */
export function writeLayout(dev: BlockDevice, layout: CreateFileLayout, hostReserves = false): void {
  const truncate = (dev as { truncate?: (size: number) => void }).truncate;
  if (!dev.write || !truncate) throw new ImageError('the output was not opened for writing');
  truncate(layout.length);
  if (layout.allocate) {
    const zeros = new Uint8Array(Math.min(ZERO_CHUNK, layout.length));
    const ranges = layout.allocateRanges ?? [[0, layout.length]];
    for (const [start, end] of layout.reserve && !hostReserves ? [...ranges, layout.reserve] : ranges) {
      if (start < 0 || end > layout.length) throw new ImageError(`instar refuses a create that writes outside the file (offset ${start})`);
      for (let pos = start; pos < end; pos += zeros.length) dev.write(zeros.subarray(0, Math.min(zeros.length, end - pos)), pos);
    }
  }
  for (const w of layout.writes) {
    if (w.pos < 0 || w.pos + w.bytes.length > layout.length) throw new ImageError(`instar refuses a create that writes outside the file (offset ${w.pos})`);
    dev.write(w.bytes, w.pos);
  }
}

export function createOp(raw: Record<string, unknown>, ctx: OpContext): CreateResult {
  const options = raw as unknown as CreateOptions;
  const capability = findDriver(options.format)?.create;
  if (!capability) throw new ImageError(`instar cannot create ${options.format} images`);
  const { image, dataFile, extents = [] } = capability.layout(options.plan);
  const output = ctx.devices.find((d) => d.spec.role === 'output');
  const data = ctx.devices.find((d) => d.spec.role === 'data-file');
  const extentDevices = ctx.devices.filter((d) => d.spec.role === 'extent');
  if (!output || (dataFile && !data) || extentDevices.length !== extents.length) throw new ImageError('the host did not grant the files to create');
  try {
    writeLayout(output.dev, image, true);
    if (dataFile && data) writeLayout(data.dev, dataFile);
    extents.forEach((layout, i) => writeLayout(extentDevices[i].dev, layout));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (typeof code === 'string' && /^E[A-Z0-9]+$/.test(code)) return { failed: code };
    throw e;
  }
  return image.reserve ? { written: true, reserve: image.reserve } : { written: true };
}
