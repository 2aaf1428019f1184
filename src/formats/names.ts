/**
 * The names of the format drivers (src/formats/registry.ts), without their code: the trusted side
 * checks `-f`/`-O` names and prints help with this list, and must not load every parser to do
 * so (each CLI call would pay for it at startup). A unit test keeps it equal to the registry.
 */
export const DRIVER_NAMES: readonly string[] = ['raw', 'qcow2', 'vmdk', 'vpc', 'vhdx', 'vdi', 'qcow', 'parallels', 'qed', 'luks', 'bochs', 'cloop', 'dmg', 'iso'];

export function isDriverName(name: string): boolean {
  return DRIVER_NAMES.includes(name);
}
