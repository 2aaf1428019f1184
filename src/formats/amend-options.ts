// The options `qemu-img amend` knows per format, as data only: the trusted host prints `-o help`
// from it without loading any format code, and the guest checks an option list against it.
// [name, type, help] in each driver's declaration order (qemu checks them in this order; its help
// lists them sorted by name). Identical in qemu 7.2 and 10.0.
import type { CreateOptionType } from './types.ts';

export type AmendOption = readonly [name: string, type: CreateOptionType, help: string];

const LUKS_AMEND: readonly AmendOption[] = [
  ['state', 'string', 'Select new state of affected keyslots (active/inactive)'],
  ['new-secret', 'string', 'New secret to set in the matching keyslots. Empty string to erase'],
  ['old-secret', 'string', 'Select all keyslots that match this password'],
  ['keyslot', 'number', 'Select a single keyslot to modify explicitly'],
  ['iter-time', 'number', 'Time to spend in PBKDF in milliseconds'],
];

// qemu declares the encrypt.* options first, then the common ones (its checks follow this order).
export const QCOW2_AMEND: readonly AmendOption[] = [
  ...LUKS_AMEND.map(([name, type, help]) => [`encrypt.${name}`, type, help] as const),
  ['size', 'size', 'Virtual disk size'],
  ['compat', 'string', 'Compatibility level (v2 [0.10] or v3 [1.1])'],
  ['backing_file', 'string', 'File name of a base image'],
  ['backing_fmt', 'string', 'Image format of the base image'],
  ['data_file', 'string', 'File name of an external data file'],
  ['data_file_raw', 'bool', 'The external data file must stay valid as a raw image'],
  ['lazy_refcounts', 'bool', 'Postpone refcount updates'],
  ['refcount_bits', 'number', 'Width of a reference count entry in bits'],
];

/** Options qcow2 takes only at creation: qemu adds "This option is only supported for image creation". */
const QCOW2_CREATE_ONLY: Readonly<Record<string, CreateOptionType>> = {
  cluster_size: 'size', compression_type: 'string', encryption: 'bool', extended_l2: 'bool', preallocation: 'string',
  'encrypt.format': 'string', 'encrypt.cipher-alg': 'string', 'encrypt.cipher-mode': 'string', 'encrypt.hash-alg': 'string',
  'encrypt.ivgen-alg': 'string', 'encrypt.ivgen-hash-alg': 'string', 'encrypt.key-secret': 'string',
};

const LUKS_CREATE_ONLY: Readonly<Record<string, CreateOptionType>> = {
  'cipher-alg': 'string', 'cipher-mode': 'string', 'hash-alg': 'string', 'ivgen-alg': 'string', 'ivgen-hash-alg': 'string',
  'key-secret': 'string', preallocation: 'string', size: 'size', detached_header: 'bool',
};

/** The formats with an amend driver in qemu, their options and their create-only options. */
export const AMEND_OPTIONS: Readonly<Record<string, { amend: readonly AmendOption[]; createOnly: Readonly<Record<string, CreateOptionType>> }>> = {
  qcow2: { amend: QCOW2_AMEND, createOnly: QCOW2_CREATE_ONLY },
  luks: { amend: LUKS_AMEND, createOnly: LUKS_CREATE_ONLY },
};

const TYPE_NAMES: Record<CreateOptionType, string> = { string: 'str', bool: 'bool (on/off)', number: 'num', size: 'size' };

/** `amend -o help` for a format with amend options (qemu's print_amend_option_help). */
export function amendHelp(format: string): string {
  const table = AMEND_OPTIONS[format];
  const lines = [`Amend options for '${format}':`];
  for (const [name, type, help] of [...table.amend].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))) {
    const head = `  ${name}=<${TYPE_NAMES[type]}>`;
    lines.push(`${head.padEnd(24)} - ${help}`);
  }
  return lines.join('\n') + '\n';
}
