/**
 * The names of the format drivers (src/formats/registry.ts), without their code: the trusted side
 * checks `-f`/`-O` names and prints help with this list, and must not load every parser to do
 * so (each CLI call would pay for it at startup). A unit test keeps it equal to the registry.
 */
export const DRIVER_NAMES: readonly string[] = ['raw', 'file', 'qcow2', 'vmdk', 'vpc', 'vhdx', 'vdi', 'qcow', 'parallels', 'qed', 'luks', 'bochs', 'cloop', 'dmg', 'iso'];

/**
 * Formats instar detects and names but qemu has no driver for (an ISO is raw to qemu): naming one
 * with -f, --image-opts driver= or -O gets qemu's "Unknown driver" refusal.
 */
export const DETECTION_ONLY: readonly string[] = ['iso'];

export function isDriverName(name: string): boolean {
  return DRIVER_NAMES.includes(name) && !DETECTION_ONLY.includes(name);
}

/** The --image-opts option that names the key secret, in each format that has one. */
const KEY_OPTION: Readonly<Record<string, string>> = { luks: 'key-secret', qcow2: 'encrypt.key-secret', qcow: 'encrypt.key-secret' };

/** Whether `format` takes `keyOption` (key-secret, encrypt.key-secret) given without driver=. */
export function takesKeyOption(format: string, keyOption: string): boolean {
  return KEY_OPTION[format] === keyOption;
}

/**
 * The --image-opts option left over once `format` has taken its own (qemu's open then fails,
 * "does not support the option"): one no format has, or a key option this format lacks.
 */
export function leftoverOption(format: string, unknownOption: string | undefined, keyOption: string | undefined): string | undefined {
  return unknownOption ?? (keyOption !== undefined && !takesKeyOption(format, keyOption) ? keyOption : undefined);
}
