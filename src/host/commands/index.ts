import type { Command } from './types.ts';
import { info } from './info.ts';
import { inspect } from './inspect.ts';
import { map } from './map.ts';
import { convert } from './convert.ts';
import { compare } from './compare.ts';
import { check } from './check.ts';

/** The subcommands with a trusted half; the rest report that they are not implemented yet. */
export const commands: Record<string, Command> = {
  info,
  inspect,
  map,
  convert,
  compare,
  check,
};
