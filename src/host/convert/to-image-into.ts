// `convert -n -O qcow2`, the trusted half: the target exists and is opened read-write by the
// host (the user named it, as a new target's path); a guest copies the sources into it as qemu
// does (ops/convert/to-image-into.ts) and the host fsyncs it as -t says. What instar does not
// write into is refused before anything is written.
import { closeSync, constants, fstatSync, fsyncSync, openSync } from 'node:fs';
import { fdFileId } from '../punch-holes.ts';
import { ConvertError } from './errors.ts';
import { CACHE_MODES } from './early-plan.ts';
import { runWithReferencedFiles, ReferencedFileError } from '../open-files.ts';
import { OpError } from '../sandbox/run.ts';
import { strerror } from '../../strerror.ts';
import { referencedFailure } from './open-copy.ts';
import type { ImageJob } from './to-image.ts';
import type { ConvertIntoOptions, ConvertIntoResult } from '../../ops/convert/to-image-into.ts';

export async function convertIntoImage(job: ImageJob): Promise<void> {
  const { cmd, ctx, s } = job;
  const outPath = cmd.args[cmd.args.length - 1];
  const refuse = (why: string) => new ConvertError(`instar cannot convert into an existing ${s.outputFormat} image (-n) ${why}; nothing was written`);
  if (s.outputFormat !== 'qcow2') throw refuse('yet');
  if (cmd.options.has('compress')) throw refuse('with -c yet');
  if (cmd.options.has('target-image-opts')) throw refuse('with --target-image-opts yet');
  const read: string[] = [];
  const opened = await job.open(read);
  if (opened.blockStatus !== undefined || opened.nothingToCopy) {
    throw new ConvertError(opened.blockStatus ?? 'instar cannot convert sources whose sizes add up past 2^63 bytes');
  }
  const backing = cmd.options.has('backing');
  if (backing && job.targets.length > 1) throw new ConvertError('Having a backing file for the target makes no sense when concatenating multiple input images');
  if (!CACHE_MODES.has(s.outputCache)) throw new ConvertError(`Invalid cache option: ${s.outputCache}`);
  let fd: number;
  try {
    // O_NONBLOCK: a FIFO must not hang the open; anything but a regular file is refused below.
    // O_DSYNC unless -t unsafe (qemu-img convert's default): the plan's barriers then hold across a power loss too.
    const sync = s.outputCache === 'unsafe' ? 0 : constants.O_DSYNC;
    fd = openSync(outPath, constants.O_RDWR | constants.O_NOCTTY | constants.O_NONBLOCK | sync);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? 'EIO';
    throw new ConvertError(`Could not open '${outPath}': Could not open '${outPath}': ${strerror(code)}`);
  }
  try {
    if (!fstatSync(fd).isFile()) throw new ConvertError(`instar writes images only into regular files, and '${outPath}' is not one`);
    if (read.includes(fdFileId(fd))) throw refuse('that the sources read');
    const options: ConvertIntoOptions = {
      sources: job.options.sources,
      target: job.inputs.length,
      targetName: outPath,
      snapshot: job.options.snapshot,
      unsafeQuirks: job.options.unsafeQuirks,
      profile: job.options.profile,
      secrets: job.options.secrets,
      sparseSize: s.sparse,
      targetIsZero: s.targetIsZero,
      backingGiven: backing,
      progress: !!job.printer,
    };
    const run = { ...ctx.run, onProgress: (done: number, all: number) => (done > 0 ? job.printer?.show((100 * done) / all) : undefined) };
    let result: ConvertIntoResult;
    try {
      const inputs = [...job.inputs, { fd, path: outPath, writable: true, role: 'output' as const }];
      result = (await runWithReferencedFiles('convert-into', options as unknown as Record<string, unknown>, inputs, { ...ctx, run })) as ConvertIntoResult;
    } catch (e) {
      // A file the target names (its backing chain) is worded under the target's name.
      if (e instanceof ReferencedFileError && e.file.referrer >= job.inputs.length) throw new ConvertError(`Could not open '${outPath}': ${e.message}`);
      if (e instanceof ReferencedFileError) throw referencedFailure(e, job.targets);
      if (e instanceof OpError) throw new ConvertError(e.message);
      throw e;
    }
    if (typeof result !== 'object' || result === null) throw new ConvertError('the guest gave a malformed answer');
    if ('openFailed' in result) throw new ConvertError(`Could not open '${outPath}': ${String(result.openFailed)}`);
    if ('tooSmall' in result) throw new ConvertError('output file is smaller than input file');
    if ('refused' in result) throw new ConvertError(String(result.refused));
    if (!('counted' in result)) throw new ConvertError('the guest gave a malformed answer');
    if (s.outputCache !== 'unsafe') fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
