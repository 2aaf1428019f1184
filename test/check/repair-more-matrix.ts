// The cases of a check -r differential test: every image under both oracles and both -r modes in
// the long tier; in the short tier each image once, the version and the mode rotating over the
// images, so that the short tier still runs both oracles and both modes.
import { VERSIONS, type OracleVersion } from '../helpers/oracles.ts';
import { LONG } from '../helpers/long.ts';

export interface RepairCase {
  version: OracleVersion;
  name: string;
  mode: 'leaks' | 'all';
}

export function repairCases(names: readonly string[]): RepairCase[] {
  const modes = ['leaks', 'all'] as const;
  if (LONG) return VERSIONS.flatMap((version) => names.flatMap((name) => modes.map((mode) => ({ version, name, mode }))));
  return names.map((name, i) => ({ version: VERSIONS[i % 2], name, mode: modes[Math.floor(i / 2) % 2] }));
}
