// check -r for parallels, against qemu-img 7.2 and 10.0: the unclean mark (repaired under -r all,
// cleared by the close in either mode), space leaked at the end (cut off), BAT entries outside
// the image (cleared, qemu 10.0 -r all). Output, exit status and file byte-identical; what qemu
// repairs by other means is refused with nothing written; every prefix of the writes leaves an
// image qemu-img check reads, no more damaged than before.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { VERSIONS, runQemu, type OracleVersion } from '../helpers/oracles.ts';
import { assertPrefixesSafe, repairCases } from './repair-more-matrix.ts';
import { tiered } from '../helpers/long.ts';
import { RepairDirs, assertSameRun, planPrefix } from './repair-harness.ts';
import { parallelsDriver } from '../../src/formats/parallels/driver.ts';
import { repairParallels } from '../../src/formats/parallels/repair.ts';
import { checkParallels } from '../../src/formats/parallels/check.ts';

const dirs = new RepairDirs();
const MiB = 1024 * 1024;
const INUSE = 0x746f6e59;
let base: Buffer;

const unclean = (b: Buffer) => (b.writeUInt32LE(INUSE, 44), b);
const leak = (b: Buffer) => Buffer.concat([b, Buffer.alloc(3 * MiB, 0x33)]);
/** BAT entry 1 far past the end of the file. */
const outside = (b: Buffer) => (b.writeUInt32LE(100000, 64 + 4), b);
/** BAT entry 2 names entry 0's cluster (qemu 10.0 copies it elsewhere). */
const duplicate = (b: Buffer) => (b.copy(b, 64 + 8, 64, 68), b);

const images: Record<string, () => Buffer> = {
  clean: () => Buffer.from(base),
  unclean: () => unclean(Buffer.from(base)),
  'leaked tail': () => leak(Buffer.from(base)),
  // In this order the short tier (repair-more-matrix.ts) runs this one under qemu 10.0 -r all.
  'outside entry, unclean, leaked tail': () => leak(unclean(outside(Buffer.from(base)))),
  'unclean, leaked tail': () => leak(unclean(Buffer.from(base))),
  'outside entry': () => outside(Buffer.from(base)),
  duplicate: () => duplicate(Buffer.from(base)),
};

/** Cases instar refuses, per version and mode (qemu 7.2 grows the file to an outside entry; 10.0 aborts on it under -r leaks or copies duplicates). */
function refuses(version: OracleVersion, name: string, mode: string): boolean {
  if (name.includes('outside')) return version === '7.2' || mode === 'leaks';
  return name === 'duplicate' && version === '10.0' && mode === 'all';
}

before(() => {
  const path = join(dirs.root, 'base.parallels');
  assert.equal(runQemu('7.2', ['create', '-q', '-f', 'parallels', path, '4M']).status, 0);
  assert.equal(runQemu('7.2', ['-f', 'parallels', '-c', 'write -P 0x11 0 1M', '-c', 'write -P 0x12 3M 1M', path], {}, 'qemu-io').status, 0);
  base = readFileSync(path);
});

after(() => dirs.remove());

test('check -r leaks|all on parallels images: output and file byte-identical to qemu-img, or refused with nothing written', () => {
  for (const { version, name, mode } of repairCases(Object.keys(images))) {
    const make = images[name];
    const label = `${version} ${name} -r ${mode}`;
    const bytes = make();
    const refused = refuses(version, name, mode);
    // qemu on the refused cases grows the file to 100 GB (sparse) or aborts: not run.
    const r = dirs.run(version, 'a.parallels', bytes, ['check', '-r', mode, 'a.parallels'], { skipQemu: refused });
    if (refused) {
      assert.match(r.instar.stderr, /^qemu-img: instar cannot repair this parallels image \(.*\); nothing was written\n$/, label);
      assert.equal(r.instar.status, 1, label);
      assert.ok(r.instarFile.equals(bytes), `${label}: unchanged`);
      continue;
    }
    assertSameRun(r, label);
    assert.ok(r.qemuFile.equals(r.instarFile), `${label}: repaired files differ`);
  }
});

test('check -r all --output=json on a parallels image through the sandbox', () => {
  // One oracle in the short tier (the matrix above runs both), both in the long tier.
  for (const version of tiered(VERSIONS, (v) => v === '10.0')) {
    const r = dirs.run(version, 'a.parallels', images['unclean, leaked tail'](), ['check', '-r', 'all', '--output=json', 'a.parallels'], { sandboxed: true });
    assertSameRun(r, version);
    assert.match(r.qemu.stdout, /"leaks-fixed": 3/);
    assert.ok(r.qemuFile.equals(r.instarFile), `${version}: repaired files differ`);
  }
});

// qemu 10.0's own check aborts on an entry outside the image (an assertion): 7.2 judges the prefixes.
test('every prefix of a parallels repair leaves an image qemu-img check reads, no more damaged', () => {
  const path = join(dirs.root, 'prefix.parallels');
  const bytes = images['outside entry, unclean, leaked tail']();
  assert.equal(assertPrefixesSafe('parallels', path, bytes, (n) => planPrefix(path, bytes, n, parallelsDriver, checkParallels, repairParallels)), 3);
});
