// convert --bitmaps, the host side. qemu-img checks the first source's bitmaps after its
// compression checks and before it creates the target (convert_check_bitmaps); a guest loads
// them and answers. After the copy the guest reports the inconsistent bitmaps it skipped
// (--skip-broken-bitmaps), or that the new image cannot hold bitmaps, which qemu finds only once
// the target exists (the target then stays, as qemu leaves it).
import type { ParsedCommand } from '../../cli/types.ts';
import type { CommandContext } from '../commands/types.ts';
import { findDriver } from '../../formats/registry.ts';
import { runWithReferencedFiles, ReferencedFileError, type InputFile } from '../open-files.ts';
import { OpError } from '../sandbox/run.ts';
import type { Target } from '../input-image.ts';
import type { ConvertOptions } from '../../ops/convert.ts';
import type { BitmapCheckOptions } from '../../ops/convert/to-image-bitmaps.ts';
import { ConvertError, ConvertErrorText } from './errors.ts';
import { referencedFailure } from './open-copy.ts';

/** Longest bitmap name qemu stores (and the guest may report). */
const MAX_NAME = 1023;

export const wantsBitmaps = (cmd: ParsedCommand): boolean => cmd.options.has('bitmaps');

/**
 * qemu past 7.2 (10.0 measured): its parallels driver says it takes persistent bitmaps, so convert
 * copies the whole disk before creating the first bitmap fails ("Can't store persistent bitmaps").
 */
export const bitmapsFailAfterCopy = (format: string, profile: { major: number }): boolean => format === 'parallels' && profile.major > 7;

/** --bitmaps into a format without persistent bitmaps: qemu creates the image, opens it and fails. */
export const bitmapsStopAtCreate = (cmd: ParsedCommand, format: string, profile: { major: number }): boolean =>
  wantsBitmaps(cmd) && !findDriver(format)?.dirtyBitmaps && !bitmapsFailAfterCopy(format, profile);

/** The bitmap whose creation failed (bitmapsFailAfterCopy), as the guest names it; undefined when none did. */
export function failedBitmap(result: Record<string, unknown>): string | undefined {
  const name = result.bitmapStoreFailed;
  if (name === undefined) return undefined;
  if (typeof name !== 'string' || name.length > MAX_NAME * 4 || /[\x00-\x1f\x7f]/.test(name)) throw new ConvertError('the guest gave a malformed answer');
  return name;
}

/** Combinations instar does not replay yet: refused before anything is opened or written. */
export function refuseUnsupportedBitmaps(cmd: ParsedCommand, noCreate: boolean): void {
  if (wantsBitmaps(cmd) && noCreate) throw new ConvertError('instar cannot copy bitmaps into an existing image (-n with --bitmaps) yet; nothing was written');
}

interface CheckJob {
  cmd: ParsedCommand;
  ctx: CommandContext;
  inputs: InputFile[];
  targets: Target[];
  options: ConvertOptions;
}

/** convert_check_bitmaps on the first source: qemu's words when it refuses. */
export async function checkSourceBitmaps(job: CheckJob): Promise<void> {
  const { options } = job;
  const request: BitmapCheckOptions = {
    source: options.sources[0],
    skipBroken: job.cmd.options.has('skip-broken-bitmaps'),
    unsafeQuirks: options.unsafeQuirks,
    profile: options.profile,
    secrets: options.secrets,
  };
  let result: unknown;
  try {
    result = await runWithReferencedFiles('convert-bitmaps-check', request as unknown as Record<string, unknown>, job.inputs, job.ctx);
  } catch (e) {
    if (e instanceof ReferencedFileError) throw referencedFailure(e, job.targets);
    if (e instanceof OpError) throw new ConvertError(e.message);
    throw e;
  }
  if (typeof result !== 'object' || result === null) throw new ConvertError('the guest gave a malformed answer');
  const r = result as Record<string, unknown>;
  if (r.ok === true) return;
  if (r.lacksSupport === true) throw new ConvertError('Source lacks bitmap support');
  if (typeof r.inconsistent === 'string' && r.inconsistent.length <= MAX_NAME * 4) {
    throw new ConvertErrorText(`Cannot copy inconsistent bitmap '${r.inconsistent}'\nTry --skip-broken-bitmaps, or use 'qemu-img bitmap --remove' to delete it`);
  }
  throw new ConvertError('the guest gave a malformed answer');
}

/** The skipped bitmaps' warnings from the guest's result, checked; [] when there are none. */
export function bitmapWarnings(result: Record<string, unknown>): string[] {
  const w = result.bitmapWarnings;
  if (w === undefined) return [];
  if (!Array.isArray(w) || w.length > 65535 || !w.every((line) => typeof line === 'string' && line.length <= MAX_NAME * 4 + 64 && !line.includes('\n') && line.startsWith('warning: '))) {
    throw new ConvertError('the guest gave a malformed answer');
  }
  return w as string[];
}
