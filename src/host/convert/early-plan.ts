// Which convert command lines the CLI's early start may prepare (src/cli/early-start.ts): those
// whose copy guests follow from the command line alone. The sources are opened read-only as
// named, the target is new (created O_EXCL, so one that exists keeps qemu's two rounds), the
// output is raw and nothing else decides how it is made. Anything else (-n, -o, -c, -B, -l,
// --object, --image-opts, a snapshot, another -O) is left to the command: a miss costs only time.
import type { ParsedCommand } from '../../cli/types.ts';

/** bdrv_parse_cache_mode's names (convert's -t and -T). */
export const CACHE_MODES = new Set(['none', 'off', 'writeback', 'unsafe', 'directsync', 'writethrough']);

/** Options that change nothing about which files are opened or how the guests are launched. */
const HARMLESS = new Set(['source-format', 'output-format', 'progress', 'quiet', 'sparse-size', 'output-cache', 'source-cache', 'force-share']);

/** The files an early start opens for this convert: sources in order, then the target. */
export interface EarlyConvertFiles {
  sources: string[];
  format?: string;
  target: string;
}

export function earlyConvertFiles(cmd: ParsedCommand): EarlyConvertFiles | undefined {
  if (cmd.name !== 'convert' || cmd.args.length < 2) return undefined;
  for (const key of cmd.options.keys()) if (!HARMLESS.has(key)) return undefined;
  const last = (key: string) => cmd.options.get(key)?.at(-1);
  if ((last('output-format') ?? 'raw') !== 'raw') return undefined;
  for (const key of ['output-cache', 'source-cache']) {
    const mode = last(key);
    if (mode !== undefined && !CACHE_MODES.has(mode)) return undefined;
  }
  const format = last('source-format');
  if (format === 'file') return undefined;
  const sources = cmd.args.slice(0, -1);
  const target = cmd.args[cmd.args.length - 1];
  // Each source is opened once, by its name as given (input-image.ts keys early opens by it).
  if (new Set(sources).size !== sources.length || sources.includes(target)) return undefined;
  return { sources, format, target };
}
