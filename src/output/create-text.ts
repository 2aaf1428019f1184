// What `qemu-img create` prints on stdout: the "Formatting ..." line (qemu_opts_print over the
// merged option list, in its order) and the `-o help` listing (qemu_opts_print_help, sorted).
import type { CreateOptionSpec, CreateOptionType } from '../formats/types.ts';

/** An option's value as given: `text` as typed, `value` normalized (sizes and numbers in decimal uint64). */
export interface SetOption {
  text: string;
  value: string;
}

/** qemu's escaped_print: a comma in a string value is doubled. */
const escaped = (s: string) => s.replace(/,/g, ',,');

/**
 * "Formatting 'f', fmt=qcow2 k=v ...\n": every option that is set or has a default, in list order;
 * strings escaped, sizes and numbers as int64 (qemu's PRId64 of a uint64), booleans as typed.
 */
export function formattingLine(filename: string, format: string, specs: readonly CreateOptionSpec[], set: ReadonlyMap<string, SetOption>): string {
  const items: string[] = [];
  for (const spec of specs) {
    const opt = set.get(spec.name);
    let shown: string | undefined;
    if (!opt) shown = spec.defaultValue;
    else if (spec.type === 'string') shown = escaped(opt.text);
    else if (spec.type === 'size' || spec.type === 'number') shown = BigInt.asIntN(64, BigInt(opt.value)).toString();
    else shown = opt.text;
    if (shown !== undefined) items.push(`${spec.name}=${shown}`);
  }
  return `Formatting '${filename}', fmt=${format} ${items.join(' ')}\n`;
}

const TYPE_NAMES: Record<CreateOptionType, string> = { string: 'str', bool: 'bool (on/off)', number: 'num', size: 'size' };

/** qemu_opts_print_help: "  name=<type>" padded to 24 columns, " - help", sorted by name (strcmp). */
export function optionHelp(specs: readonly CreateOptionSpec[], format: string, withProtocol: boolean): string {
  const sorted = [...specs].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const lines = sorted.map((s) => `  ${`${s.name}=<${TYPE_NAMES[s.type]}>`.padEnd(22)} - ${s.help}\n`);
  if (withProtocol) return `Supported options:\n${lines.join('')}`;
  return `Supported ${format} options:\n${lines.join('')}\nThe protocol level may support further options.\nSpecify the target filename to include those options.\n`;
}
