// The backing file a new image names, opened as qemu-img create opens it (to learn its format and
// size; skipped with -u): the host resolves the name relative to the new image (qemu's rule),
// checks it through the path policy and opens it read-only; a guest probes it and everything
// below it. Failures come back worded as qemu words them, with its hint line.
import { closeSync } from 'node:fs';
import type { CommandContext } from './types.ts';
import { OpError } from '../sandbox/run.ts';
import { runWithReferencedFiles, ReferencedFileError } from '../open-files.ts';
import { openReferenced, startChain, PathRefusedError, ReferenceOpenError } from '../paths/resolve.ts';
import type { CreateBackingOptions, CreateBackingResult } from '../../ops/create.ts';
import { LockConflict, lockForReading } from '../image-locks.ts';

/** A create failure in qemu's words: the error (after "<progname>: <filename>: ") and hint lines as they stand. */
export class CreateFailure extends Error {
  constructor(message: string, readonly hint = '') {
    super(message);
  }
}

const OPEN_HINT = 'Could not open backing image.\n';

/** The guest's answer, checked before use. */
function validResult(raw: unknown): CreateBackingResult {
  const r = (raw ?? {}) as Record<string, unknown>;
  const ok = typeof r.format === 'string' && r.format.length <= 64 && Number.isSafeInteger(r.virtualSize) && (r.virtualSize as number) >= 0 &&
    (r.sizeErrno === undefined || Number.isInteger(r.sizeErrno)) &&
    (r.cid === undefined || (Number.isInteger(r.cid) && (r.cid as number) >= 0 && (r.cid as number) <= 0xffffffff));
  if (!ok) throw new OpError('the guest answered create-backing in a malformed way');
  return r as unknown as CreateBackingResult;
}

/**
 * Opens and probes `backing` (named by the new image `filename`) with format `format` if given;
 * `alone` opens that file only, without its own backing chain, and words failures without a hint.
 */
export async function probeBacking(filename: string, backing: string, format: string | undefined, ctx: CommandContext, alone = false, lock = false): Promise<CreateBackingResult> {
  const hint = alone ? '' : OPEN_HINT;
  // The new image is the top of the chain: its directory is the policy's default root.
  const chain = startChain(filename);
  let opened;
  try {
    opened = openReferenced(backing, filename, 'backing', ctx.policy, chain);
  } catch (e) {
    if (e instanceof PathRefusedError || e instanceof ReferenceOpenError) throw new CreateFailure(e.reason, hint);
    throw e;
  }
  // convert -B opens the new image's backing file for reading, with qemu's locks (image-locks.ts).
  try {
    if (lock) lockForReading(opened.fd, opened.path, format);
  } catch (e) {
    if (e instanceof LockConflict) throw new CreateFailure(e.message, hint);
    throw e;
  }
  // Without -F the create fails whatever the format is; qemu's message names the probed one, raw
  // included (instar's raw fallback is otherwise an --unsafe-quirks matter: nothing is read as raw here).
  const unsafeQuirks = ctx.globals.unsafeQuirks || format === undefined;
  const options: CreateBackingOptions = { format, fileName: opened.path, profile: ctx.profile, unsafeQuirks, noBacking: alone };
  try {
    // Opening a backing chain reads metadata only: the limits of info, not of a copy.
    const quick = { ...ctx, run: { ...ctx.run, limits: { cpuSeconds: 120, wallMs: 120_000, ...ctx.run.limits } } };
    const raw = await runWithReferencedFiles('create-backing', options as unknown as Record<string, unknown>, [{ fd: opened.fd, path: opened.path }], quick, [], { chain });
    return validResult(raw);
  } catch (e) {
    if (e instanceof ReferencedFileError) {
      const reason = (e.cause as { reason?: string } | undefined)?.reason ?? e.message;
      // A file the backing file names: qemu words it as it opens the backing file's own children.
      const message = e.file.role === 'backing' ? `Could not open backing file: ${reason}` : reason;
      throw new CreateFailure(message, hint);
    }
    if (e instanceof OpError) throw new CreateFailure(e.message, hint);
    throw e;
  } finally {
    closeSync(opened.fd);
  }
}
