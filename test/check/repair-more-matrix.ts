// Shared by the check -r tests of repair-more-*.test.ts. The cases of a differential test: every image under both oracles and both -r modes in
// the long tier; in the short tier each image once, the version and the mode rotating over the
// images, so that the short tier still runs both oracles and both modes.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { VERSIONS, runQemu, type OracleVersion } from '../helpers/oracles.ts';
import { LONG } from '../helpers/long.ts';
import { assertSameRun, type RepairDirs, type RepairRun } from './repair-harness.ts';

type RepairRunOptions = Parameters<RepairDirs['run']>[4];

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

/** qemu-img (or qemu-io) exited 0. */
export const qemuOk = (r: { status: number | null; stderr: string }): void => assert.equal(r.status, 0, r.stderr);

/**
 * Each prefix of a repair's writes (`apply(n)` writes the image afresh, applies the first n and
 * returns how many there are) must leave an image qemu-img check reads, with no more corruptions
 * than the damaged image had; `each` adds the caller's own assertions. Returns the write count.
 */
export function assertPrefixesSafe(label: string, path: string, bytes: Uint8Array, apply: (n: number) => number, each?: (n: number, total: number) => void, version: OracleVersion = '7.2'): number {
  writeFileSync(path, bytes);
  const before = JSON.parse(runQemu(version, ['check', '--output=json', path]).stdout);
  let total = Infinity;
  for (let n = 0; n <= total; n++) {
    total = apply(n);
    const r = runQemu(version, ['check', '--output=json', path]);
    assert.ok(r.status === 0 || r.status === 2 || r.status === 3, `${label} after ${n} writes: ${r.stderr}`);
    const now = JSON.parse(r.stdout);
    assert.ok((now.corruptions ?? 0) <= (before.corruptions ?? 0), `${label} after ${n} writes: more corruptions (${r.stdout})`);
    each?.(n, total);
  }
  return total;
}

/**
 * The differential matrix: each case's image repaired by instar and by the oracle (the image named
 * `file` in its own directory), the same output and exit status, not refused, the same bytes;
 * `opts.run` adds run options per image (sandbox, files beside it), `opts.also` more assertions.
 */
export function assertRepairsMatch(dirs: RepairDirs, images: Record<string, Uint8Array>, file: string, opts: { run?: (name: string) => RepairRunOptions; also?: (r: RepairRun, c: RepairCase, label: string) => void } = {}): void {
  for (const c of repairCases(Object.keys(images))) {
    const label = `${c.version} ${c.name} -r ${c.mode}`;
    const r = dirs.run(c.version, file, images[c.name], ['check', '-r', c.mode, file], opts.run?.(c.name));
    assertSameRun(r, label);
    assert.ok(!r.instar.stderr.includes('instar'), `${label}: not refused (${r.instar.stderr})`);
    assert.ok(r.qemuFile.equals(r.instarFile), `${label}: repaired files differ`);
    opts.also?.(r, c, label);
  }
}
