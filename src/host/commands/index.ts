import type { Command } from './types.ts';

/**
 * The subcommands with a trusted half, each loaded on first use: a command line loads only its
 * own command's code (and the CLI starts that much sooner). The rest report that they are not
 * implemented yet.
 */
export const commands: Record<string, () => Promise<Command>> = {
  info: async () => (await import('./info.ts')).info,
  inspect: async () => (await import('./inspect.ts')).inspect,
  map: async () => (await import('./map.ts')).map,
  convert: async () => (await import('./convert.ts')).convert,
  compare: async () => (await import('./compare.ts')).compare,
  check: async () => (await import('./check.ts')).check,
  measure: async () => (await import('./measure.ts')).measure,
  snapshot: async () => (await import('./snapshot.ts')).snapshot,
  create: async () => (await import('./create.ts')).create,
  resize: async () => (await import('./resize.ts')).resize,
  rebase: async () => (await import('./rebase.ts')).rebase,
  commit: async () => (await import('./commit.ts')).commit,
  amend: async () => (await import('./amend.ts')).amend,
  dd: async () => (await import('./dd.ts')).dd,
  bench: async () => (await import('./bench.ts')).bench,
  bitmap: async () => (await import('./bitmap.ts')).bitmap,
};

/**
 * The commands whose option loop (optionsInOrder, src/cli/argv-stop.ts) comes before anything
 * else they do: a command line that stops early runs them up to the stop. The others are not
 * run at all then.
 */
export const meetsArgvStop: ReadonlySet<string> = new Set([
  'amend', 'bench', 'bitmap', 'check', 'commit', 'compare', 'convert', 'create', 'dd', 'info', 'map', 'measure',
  'rebase', 'resize', 'snapshot',
]);
