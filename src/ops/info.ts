import { ImageError, type OpenContext } from '../formats/types.ts';
import { detectFormat } from '../formats/detect.ts';
import { findDriver } from '../formats/registry.ts';
import type { Op } from './types.ts';
import { warnOpened } from './open-tree.ts';

export interface InfoOptions {
  /** -f: the format the user named; detection runs when absent. */
  format?: string;
  /** --unsafe-quirks: qemu-img's raw fallback for unknown files. */
  unsafeQuirks?: boolean;
  /** The image's name as the user gave it: qemu's dmg probe goes by the name alone. */
  fileName?: string;
  /** The emulated qemu-img version's profile (src/output/profile.ts), sent by the host. */
  profile?: OpenContext['profile'];
}

/**
 * What `info` answers instead of a NodeInfo when the image names files (VMDK extents) the host has
 * not given it yet; the host opens the allowed ones and runs the op again with them.
 */
export interface NeedFilesAnswer {
  'need-files': { role: 'extent' | 'data-file' | 'backing'; name: string; referrer: number }[];
}

/**
 * What `info` answers when the image opened but qemu's size query fails (formats/sector-count.ts):
 * qemu's info stops there, and the host words it ("Can't get image size").
 */
export interface SizeFailedAnswer {
  'size-failed': { format: string; errno: number };
}

/** The guest half of `info`: detect, open, and report what the image's bytes say. */
export const infoOp: Op = (options, ctx) => {
  const opts = options as InfoOptions;
  const input = ctx.devices.find((d) => d.spec.role === 'input');
  if (!input) throw new ImageError('no input device');
  const format =
    opts.format ?? detectFormat(input.dev, { unsafeQuirks: !!opts.unsafeQuirks, fileName: opts.fileName });
  const driver = findDriver(format);
  if (!driver) throw new ImageError(`Unknown driver '${format}'`);
  // Files the host opened for names the image gave, keyed by those names.
  const devices = new Map(ctx.devices.filter((d) => d.spec.role !== 'input' && d.spec.name !== undefined).map((d) => [d.spec.name as string, d.dev]));
  try {
    const image = driver.open(input.dev, { writable: false, displayName: opts.fileName, profile: opts.profile, devices, unsafeQuirks: !!opts.unsafeQuirks });
    // Non-fatal lines qemu prints while opening (e.g. dmg's unsupported chunk types).
    warnOpened(image, ctx, 0);
    // qemu's bdrv_query_image_info asks the size before anything else.
    if (image.sizeFailure) return { 'size-failed': { format: image.format, errno: image.sizeFailure.errno } } satisfies SizeFailedAnswer;
    return image.info();
  } catch (e) {
    const files = (e as { files?: unknown }).files;
    // The files are named by the input (device 0); the host's shared loop grants them.
    if (e instanceof ImageError && Array.isArray(files)) return { 'need-files': files.map((f) => ({ ...f, referrer: 0 })) } satisfies NeedFilesAnswer;
    throw e;
  }
};
