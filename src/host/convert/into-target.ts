// The target of `convert -n`: a file name with -O's format (raw by default), or with
// --target-image-opts an option string (driver=…,file.filename=…,key-secret=…) parsed as
// --image-opts parses a source. Pure: nothing is opened here. qemu meets a bad option string only
// when it opens the target, after the sources, so its failure is kept for the caller to throw then.
import type { ParsedCommand } from '../../cli/types.ts';
import { imageTarget, InputImageError, guestFormat } from '../input-image.ts';
import { parseQemuOpts } from '../commands/image-opts.ts';
import { ConvertStopsWithSuccess } from './errors.ts';

export interface IntoTarget {
  /** The file to open read-write. */
  path: string;
  /** How qemu's messages name the target ("Could not open 'X': …"). */
  errorName: string;
  /** The format to open it as; undefined: probed (--target-image-opts without driver=), or a failure. */
  format?: string;
  /** The --object secret that unlocks it (key-secret=, encrypt.key-secret=). */
  keySecret?: string;
  /** qemu's message when it opens the target, thrown after the sources are open. */
  failure?: string;
  /**
   * Without driver=: the options left for the probed format, in order (qemu names the first one
   * that format does not have once it has opened the image; key-secret is luks's).
   */
  probedOptions?: string[];
}

/** Options of an image node that are not its format's (read-only, caching, the node's name). */
const NODE_OPTIONS = new Set(['read-only', 'auto-read-only', 'force-share', 'node-name', 'detect-zeroes', 'discard', 'cache.direct', 'cache.no-flush']);

/** Options qemu's raw driver has (a window into the file) that instar does not implement. */
const RAW_OPTIONS = new Set(['offset', 'size']);

/** -n -B with --target-is-zero: qemu's check after opening the sources (its status stays 0). */
export function checkZeroInitWithBacking(cmd: ParsedCommand): void {
  if (cmd.options.has('no-create') && cmd.options.has('backing') && cmd.options.has('target-is-zero')) {
    throw new ConvertStopsWithSuccess('Cannot use --target-is-zero when the destination image has a backing file');
  }
}

export function intoTarget(cmd: ParsedCommand): IntoTarget {
  const spec = cmd.args[cmd.args.length - 1];
  const outputFormat = cmd.options.get('output-format')?.at(-1);
  if (!cmd.options.has('target-image-opts')) return { path: spec, errorName: spec, format: outputFormat ?? 'raw' };
  try {
    const t = imageTarget(spec, outputFormat, true);
    if (t.format === undefined && t.unknownFormatOption !== undefined) {
      const opts = parseQemuOpts(spec, 'file');
      const probedOptions = [...opts.keys()].filter((k) => k !== 'driver' && !k.startsWith('file.') && !NODE_OPTIONS.has(k));
      return { path: t.path, errorName: spec, probedOptions, keySecret: opts.get('key-secret') ?? opts.get('encrypt.key-secret') };
    }
    const failure = t.unknownFormatOption === undefined ? undefined
      : t.format === 'raw' && RAW_OPTIONS.has(t.unknownFormatOption) ? `Could not open '${spec}': instar does not support the --image-opts option '${t.unknownFormatOption}'`
      : `Could not open '${spec}': Block format '${t.format}' does not support the option '${t.unknownFormatOption}'`;
    // driver=file: the protocol as the format, the file's bytes as the disk, as raw has them.
    if (failure !== undefined) return { path: t.path, errorName: spec, failure };
    return { path: t.path, errorName: spec, format: guestFormat(t.format), keySecret: t.keySecret };
  } catch (e) {
    if (e instanceof InputImageError) return { path: spec, errorName: spec, failure: e.message };
    throw e;
  }
}
