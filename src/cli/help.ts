/**
 * `--help` and `--version`. The body of qemu-img's help is reproduced per profile; the lines
 * that would name a QEMU build (version, copyright, format list, bug-report footer) say instar.
 */
import type { Profile } from '../output/profile.ts';
import { drivers } from '../formats/registry.ts';
import { usesModernCli } from './tables.ts';
import { HELP_7_2, HELP_10_0, COMMAND_HELP_10_0 } from './help-text.ts';

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

function formatNames(): string[] {
  return drivers.map((d) => d.name).sort();
}

/** 10.0 wraps the format list into indented lines of at most 78 columns. */
function wrappedFormats(): string {
  const lines: string[] = [];
  let line = ' ';
  for (const name of formatNames()) {
    if (line.length + 1 + name.length > 78 && line.trim() !== '') {
      lines.push(line);
      line = ' ';
    }
    line += ' ' + name;
  }
  lines.push(line);
  return lines.join('\n') + '\n';
}

const FOOTER = '\ninstar is not QEMU: report problems with instar to the instar project.\n';

/** `qemu-img --help` (and, for 7.2, every subcommand's -h). */
export function mainHelp(profile: Profile): string {
  if (usesModernCli(profile.major)) {
    return versionText(profile) + HELP_10_0 + 'Supported image formats:\n\n' + wrappedFormats() + FOOTER;
  }
  return versionText(profile) + HELP_7_2 + `Supported formats: ${formatNames().join(' ')}\n` + FOOTER;
}

/** `qemu-img COMMAND --help`: 10.0 has one per command, 7.2 prints the whole help. */
export function commandHelp(name: string, profile: Profile): string {
  if (usesModernCli(profile.major) && Object.hasOwn(COMMAND_HELP_10_0, name)) return COMMAND_HELP_10_0[name];
  return mainHelp(profile);
}
