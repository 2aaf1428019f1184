/**
 * `--help` and `--version`, in instar's own words. Help is generated from the option tables, so
 * it lists exactly what the active profile accepts.
 */
import type { Profile } from '../output/profile.ts';
import { DRIVER_NAMES } from '../formats/names.ts';
import { SUBCOMMANDS, commandTable } from './tables.ts';
import { COMMAND_OPERANDS, COMMAND_SUMMARIES, INSTAR_OPTIONS_HELP, OPTION_HELP } from './help-text.ts';

/** instar's own version (kept in step with package.json). */
export const INSTAR_VERSION = '0.1.0';

/**
 * `qemu-img --version`. The first line keeps qemu-img's shape ("qemu-img version X.Y.Z") so that
 * tools that parse it see the emulated version; the parenthesis and the second line say instar.
 */
export function versionText(profile: Profile): string {
  const v = `${profile.major}.${profile.minor}`;
  return `qemu-img version ${v}.0 (instar ${INSTAR_VERSION})\n` +
    `instar is a sandboxed reimplementation of qemu-img, emulating qemu-img ${v}; it is not QEMU.\n`;
}

function formatNames(): string {
  return [...DRIVER_NAMES].sort().join(' ');
}

/** `qemu-img --help`. */
export function mainHelp(profile: Profile): string {
  const width = Math.max(...SUBCOMMANDS.map((n) => n.length));
  const commands = [...SUBCOMMANDS, 'inspect'].map((n) => `  ${n.padEnd(width)}  ${COMMAND_SUMMARIES[n] ?? ''}`);
  return [
    versionText(profile).trimEnd(),
    'usage: qemu-img [-h | -V | -T TRACE] COMMAND [command options]',
    '',
    'Commands (COMMAND --help lists a command\'s options):',
    ...commands,
    '',
    'instar options (any command):',
    INSTAR_OPTIONS_HELP,
    '',
    `Supported formats: ${formatNames()}`,
    '',
  ].join('\n');
}

/** `qemu-img COMMAND --help`: the command's synopsis and every option its table accepts. */
export function commandHelp(name: string, profile: Profile): string {
  const table = commandTable(name, profile.major);
  if (!table) return mainHelp(profile);
  const shortOf = new Map<string, string>();
  for (const letter of table.optstring.replace(/[^A-Za-z]/g, '')) shortOf.set(table.keyOf(letter), letter);
  const lines: string[] = [];
  const seen = new Set<string>();
  for (const opt of table.long) {
    const key = table.keyOf(opt.val);
    const short = shortOf.get(key);
    const arg = opt.hasArg ? ' ARG' : '';
    lines.push(`  ${short ? `-${short}, ` : '    '}--${opt.name}${arg}`.padEnd(34) + (OPTION_HELP[key] ?? OPTION_HELP[opt.name] ?? ''));
    seen.add(key);
  }
  for (const [key, letter] of shortOf) {
    if (seen.has(key)) continue;
    const takesArg = table.optstring.includes(`${letter}:`);
    lines.push(`  -${letter}${takesArg ? ' ARG' : ''}`.padEnd(34) + (OPTION_HELP[key] ?? key));
  }
  return [
    `usage: qemu-img ${name} [options] ${COMMAND_OPERANDS[name] ?? ''}`.trimEnd(),
    COMMAND_SUMMARIES[name] ?? '',
    '',
    'Options:',
    ...lines,
    '',
    'instar options:',
    INSTAR_OPTIONS_HELP,
    '',
  ].join('\n');
}
