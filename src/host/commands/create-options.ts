// create's -o on the trusted side: which formats instar creates (their pure create code, without
// the parsers), qemu's merged option list (the format's, then the file protocol's), and the
// parsed values: normalized for the format's checks, as typed for the "Formatting ..." line.
import type { CreateCapability, CreateOptionSpec, CreateOptionType } from '../../formats/types.ts';
import { FILE_PROTOCOL_CREATE_OPTIONS, rawCreate } from '../../formats/raw/create.ts';
import { fileCreate } from '../../formats/file/create.ts';
import { qcow2Create } from '../../formats/qcow2/create.ts';
import { vpcCreate } from '../../formats/vpc/create.ts';
import { vmdkCreate } from '../../formats/vmdk/create.ts';
import { vhdxCreate } from '../../formats/vhdx/create.ts';
import { vdiCreate } from '../../formats/vdi/create.ts';
import { parallelsCreate } from '../../formats/parallels/create.ts';
import { qedCreate } from '../../formats/qed/create.ts';
import { qcowCreate } from '../../formats/qcow/create.ts';
import { luksCreate } from '../../formats/luks/create.ts';
import { findMeasurer } from '../../formats/measurers.ts';
import { optionItems, parseCreateOptions } from './measure-options.ts';
import type { SetOption } from '../../output/create-text.ts';

/** The formats instar creates (a unit test keeps these the drivers' own `create`). */
export const CREATORS: Readonly<Record<string, CreateCapability>> = { raw: rawCreate, file: fileCreate, qcow2: qcow2Create, vpc: vpcCreate, vmdk: vmdkCreate, vhdx: vhdxCreate, vdi: vdiCreate, parallels: parallelsCreate, qed: qedCreate, qcow: qcowCreate, luks: luksCreate };

export type FormatLookup =
  | { capability: CreateCapability; specs: readonly CreateOptionSpec[] }
  /** qemu creates it, instar not yet: its option types still check -o as qemu would. */
  | { types: Readonly<Record<string, CreateOptionType>> }
  | { error: 'unknown' | 'no-create' };

/** The format's options then the file protocol's, a name listed once (qemu_opts_append). */
function merged(own: readonly CreateOptionSpec[]): CreateOptionSpec[] {
  const out = [...own];
  for (const spec of FILE_PROTOCOL_CREATE_OPTIONS) if (!out.some((s) => s.name === spec.name)) out.push(spec);
  return out;
}

export function lookupFormat(name: string, qemu: { major: number; minor: number }): FormatLookup {
  if (Object.hasOwn(CREATORS, name)) return { capability: CREATORS[name], specs: merged(CREATORS[name].options) };
  const found = findMeasurer(name, { qemu, secretIds: new Set() });
  if ('error' in found) return { error: found.error };
  return { types: found.createOptions };
}

/** The option types of a spec list, as measure-options checks them. */
export function typesOf(specs: readonly CreateOptionSpec[]): Record<string, CreateOptionType> {
  return Object.fromEntries(specs.map((s) => [s.name, s.type]));
}

/**
 * qemu_opts_do_parse of the -o list: throws OptionListError at the first bad item; otherwise the
 * last value of each option, normalized and as typed.
 */
export function parseSetOptions(text: string | undefined, types: Readonly<Record<string, CreateOptionType>>, newRules: boolean): Map<string, SetOption> {
  const normalized = parseCreateOptions(text, types, newRules);
  const typed = new Map<string, string>();
  for (const [name, value] of text === undefined ? [] : optionItems(text)) typed.set(name, value);
  const out = new Map<string, SetOption>();
  for (const [name, value] of normalized) out.set(name, { value, text: typed.get(name) ?? value });
  return out;
}

/** has_help_option: an item "help" or "?" in the list. */
export function hasHelpOption(text: string | undefined): boolean {
  if (text === undefined) return false;
  return optionItems(text).some(([name, value]) => (name === 'help' || name === '?') && value === 'on');
}

/** The releases of the verified oracles (Debian 12's 7.2, backports' 10.0); others get ".0". */
const PATCH_RELEASES: Readonly<Record<string, string>> = { '7.2': '7.2.22', '10.0': '10.0.2' };

/** The full version an image records as its creator (VHDX writes "QEMU v<version>"). */
export function qemuFullVersion(profile: { major: number; minor: number }): string {
  const short = `${profile.major}.${profile.minor}`;
  return PATCH_RELEASES[short] ?? `${short}.0`;
}
