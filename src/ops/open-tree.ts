// Opens an input image and the files below it (extents, data file, backing chain) from the
// devices the host granted. A file the image names that the host has not granted yet is not an
// error: it is collected and answered as a `need-files` result, and the host runs the op again
// with those files opened through its path policy.
import { takesKeyOption } from '../formats/names.ts';
import { ImageError, type BlockDevice, type Image, type OpenContext } from '../formats/types.ts';
import { detectFormat } from '../formats/detect.ts';
import { findDriver } from '../formats/registry.ts';
import type { NeededFile } from '../protocol/messages.ts';
import type { OpContext } from './types.ts';

/** Passes on what qemu prints while it opens the image at device `source` (warn_report lines, then any error_printf tail). */
export function warnOpened(image: Image, ctx: OpContext, source: number): void {
  for (const w of image.warnings ?? []) ctx.warn?.({ text: `warning: ${w}`, prefixed: true, source });
  if (image.warningsTail !== undefined) ctx.warn?.({ text: image.warningsTail, prefixed: false, unterminated: true, source });
}

export interface OpenTreeOptions {
  /** -f for the top image; detection otherwise. */
  format?: string;
  unsafeQuirks?: boolean;
  /** The top image's name as the user gave it (messages, dmg probe by name). */
  fileName?: string;
  profile?: OpenContext['profile'];
  /** Open the top image only, as qemu does with BDRV_O_NO_BACKING. */
  noBacking?: boolean;
  /**
   * Secrets for encrypted images, base64 by device index (the host read them from --object).
   * Present (even empty) when the op reads data: an encrypted image without its key then fails
   * at open, as in qemu; absent for info, which needs no key.
   */
  secrets?: Record<number, string>;
  /**
   * The --image-opts key option (key-secret, encrypt.key-secret) by device index, given without
   * driver=: qemu hands it to the probed format, so the secret unlocks only a format that has it.
   */
  keyOptions?: Record<number, string>;
  /** qemu-img check opens the top image with BDRV_O_CHECK (see OpenContext.check). */
  check?: boolean;
}

/** Thrown when the image names files the host has not granted; ops answer it as need-files. */
export class MissingFilesError extends ImageError {
  constructor(readonly files: NeededFile[]) {
    super(`the image needs ${files.length} more file(s)`);
    this.name = 'MissingFilesError';
  }
}

/** The `need-files` result an op returns instead of its value. */
export interface NeedFilesResult {
  'need-files': NeededFile[];
}

/** Wraps an op so that MissingFilesError becomes its `need-files` result. */
export function answeringMissingFiles<T extends (...args: never[]) => unknown>(op: T): T {
  return ((...args: Parameters<T>) => {
    try {
      return op(...args);
    } catch (e) {
      if (e instanceof MissingFilesError) return { 'need-files': e.files } satisfies NeedFilesResult;
      throw e;
    }
  }) as T;
}

/** Longest chain followed inside the guest too (the host enforces its own limit). */
const MAX_LEVELS = 17;

/** Opens the image at device index `index` and everything below it, for an op that reads its
 *  data (info, which does not, opens through its own path as qemu's BDRV_O_NO_IO does). */
export function openTree(ctx: OpContext, index: number, opts: OpenTreeOptions): Image {
  const missing: NeededFile[] = [];
  const image = openLevel(ctx, index, opts.format, opts, missing, 0);
  if (missing.length > 0) throw new MissingFilesError(missing);
  return image;
}

function openLevel(ctx: OpContext, index: number, format: string | undefined, opts: OpenTreeOptions, missing: NeededFile[], level: number): Image {
  if (level >= MAX_LEVELS) throw new ImageError('Backing chain too long');
  const dev = ctx.devices[index]?.dev;
  if (!dev) throw new ImageError('no such device');
  const fileName = level === 0 ? opts.fileName : ctx.devices[index].spec.name;
  const fmt = format ?? detectFormat(dev, { unsafeQuirks: !!opts.unsafeQuirks, fileName });
  const driver = findDriver(fmt);
  if (!driver) throw new ImageError(`Unknown driver '${fmt}'`);
  const named = new Map<string, BlockDevice>();
  for (const d of ctx.devices) {
    if (d.spec.referrer === index && d.spec.role !== 'backing' && d.spec.name !== undefined) named.set(d.spec.name, d.dev);
  }
  let image: Image;
  try {
    const option = opts.keyOptions?.[index];
    const secret = option === undefined || takesKeyOption(fmt, option) ? opts.secrets?.[index] : undefined;
    const key = typeof secret === 'string' ? Buffer.from(secret, 'base64') : undefined;
    image = driver.open(dev, { writable: !!ctx.devices[index].spec.writable, devices: named, profile: opts.profile, displayName: fileName, key, keyRequired: opts.secrets !== undefined, unsafeQuirks: !!opts.unsafeQuirks, check: level === 0 && !!opts.check, readsData: true });
  } catch (e) {
    const files = (e as { files?: { role: string; name: string; format?: string }[] }).files;
    if (!(e instanceof ImageError) || !Array.isArray(files)) throw e;
    for (const f of files) missing.push({ role: f.role === 'backing' ? 'backing' : f.role === 'data-file' ? 'data-file' : 'extent', name: f.name, referrer: index, ...(f.format !== undefined ? { format: f.format } : {}) });
    return undefined as unknown as Image;
  }
  warnOpened(image, ctx, index);
  const info = image.info();
  if (info['data-file'] !== undefined && !named.has(info['data-file'])) {
    missing.push({ role: 'data-file', name: info['data-file'], referrer: index });
  }
  const backingName = info['backing-filename'];
  if (opts.noBacking || backingName === undefined || !image.attachBacking) return image;
  const backingIndex = ctx.devices.findIndex((d) => d.spec.referrer === index && d.spec.role === 'backing');
  if (backingIndex < 0) {
    missing.push({ role: 'backing', name: backingName, referrer: index, format: info['backing-filename-format'] });
    return image;
  }
  image.attachBacking(openBacking(() => openLevel(ctx, backingIndex, info['backing-filename-format'], opts, missing, level + 1)));
  return image;
}

/** qemu words a backing file's open failure "Could not open backing file: " + why, once per level. */
function openBacking(open: () => Image): Image {
  try {
    return open();
  } catch (e) {
    // Only the plain failures: subclasses carry meanings of their own (files still needed, ...).
    if (e instanceof ImageError && e.constructor === ImageError) throw new ImageError(`Could not open backing file: ${e.message}`, e.errno);
    throw e;
  }
}
