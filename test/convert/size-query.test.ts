// convert from images whose size qemu cannot tell (a parallels sector count whose byte size
// wraps in 64 bits: the image opens, its size queries fail; see formats/sector-count.ts), into a
// target that exists already (qemu's two rounds), with -n, and from a backing file that fails:
// stdout, stderr, exit status and the file left behind (size, allocated blocks, bytes) compared
// with both oracles, under the default sandbox and in-process. qemu checks the whole disk's block
// status before it writes anything, so a target it made stays as made: zeros, first block allocated.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { closeSync, existsSync, ftruncateSync, mkdirSync, openSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parallelsWithSectors, qemu, tempDir } from './helpers.ts';
import { runInstar, runQemu, VERSIONS, type RunResult } from '../helpers/oracles.ts';
import { runInProcess, SHORT_TIER_IN_PROCESS } from '../helpers/in-process.ts';
import { LONG, longTest, tiered } from '../helpers/long.ts';

const { dir, cleanup } = tempDir();
const at = (name: string) => join(dir, name);

before(() => {
  parallelsWithSectors(dir, {
    // 2^55 + 8192 sectors: 2^64 + 4 MiB bytes, wraps to 4 MiB (EFBIG); 2^55: wraps to 0 bytes.
    'efbig.hds': 2n ** 55n + 0x2000n,
    'efbig-zero.hds': 2n ** 55n,
    // Negative counts: bdrv_nb_sectors fails with the count negated and narrowed to a C int.
    'negative.hds': 2n ** 63n + 0x2000n,
    'negative-eperm.hds': 0x8000_0000_ffff_ffffn,
  });
  // qcow2 over a failing backing file: the failure is the backing file's block status, at the
  // first offset the top image does not hold (0 here, 64 KiB in top-data.qcow2, which has data
  // before and after it that qemu never writes).
  // vmdk sums its extents' sector counts: past int64 bytes (EFBIG), and negative.
  writeFileSync(at('flat.raw'), Buffer.alloc(0));
  const descriptor = (extents: string[]) => ['# Disk DescriptorFile', 'version=1', 'CID=12345678', 'parentCID=ffffffff', 'createType="monolithicFlat"', '', ...extents, '', 'ddb.virtualHWVersion = "4"', ''].join('\n');
  writeFileSync(at('vmdk-efbig.vmdk'), descriptor([`RW ${2n ** 55n + 8n} FLAT "flat.raw" 0`]));
  writeFileSync(at('vmdk-negative.vmdk'), descriptor([`RW ${2n ** 63n - 1n} FLAT "flat.raw" 0`, `RW ${2n ** 63n - 1n} FLAT "flat.raw" 0`, 'RW 8194 FLAT "flat.raw" 0']));
  qemu(['create', '-q', '-f', 'qcow2', '-u', '-b', 'efbig.hds', '-F', 'parallels', at('top.qcow2'), '4M']);
  qemu(['-c', 'write -P 0x11 1M 64k', at('top.qcow2')], '10.0', 'qemu-io');
  qemu(['create', '-q', '-f', 'qcow2', '-u', '-b', 'efbig.hds', '-F', 'parallels', at('top-data.qcow2'), '4M']);
  qemu(['-c', 'write -P 0x11 0 64k', '-c', 'write -P 0x22 2M 64k', at('top-data.qcow2')], '10.0', 'qemu-io');
});

after(cleanup);

/** What is at the target's name before the command. */
type Before = 'none' | 'data' | 'sparse' | 'disk';

function prepare(target: string, before: Before): void {
  rmSync(target, { force: true });
  if (before === 'data') writeFileSync(target, Buffer.alloc(8192, 0xa5));
  // As big as the qcow2 disks, all data: what -n leaves of it shows what was written.
  if (before === 'disk') writeFileSync(target, Buffer.alloc(4 * 1024 * 1024, 0xa5));
  if (before === 'sparse') {
    // 8 MiB of hole: no block allocated.
    const fd = openSync(target, 'w');
    ftruncateSync(fd, 8 * 1024 * 1024);
    closeSync(fd);
  }
}

/** The file left at `path`: absent, or its size, allocated 512-byte blocks and a digest of its bytes. */
function leftAt(path: string): string {
  if (!existsSync(path)) return 'absent';
  const st = statSync(path);
  return `${st.size} bytes, ${st.blocks} blocks, ${createHash('sha256').update(readFileSync(path)).digest('hex').slice(0, 16)}`;
}

interface Case {
  sources: string[];
  /** Options before the sources (-f, -n, -p …). */
  options: string[];
  before: Before;
}

/**
 * Instar's runs: sandboxed and in-process under each version. The short tier runs in-process as the
 * CLI's runCommandLine in this process (no launch, as differential/harness.ts does; the long tier and
 * INSTAR_TEST_CLI=1 launch the built CLI with --sandbox=none) and the sandboxed CLI under 10.0 only:
 * the version changes only what the host words (the same host code in both modes), which the
 * in-process runs check under both versions; the guests' transport is the same under either.
 */
const sandboxes = (version: string) => (LONG || version === '10.0' ? [[], ['--sandbox=none']] : [['--sandbox=none']]);

/** Runs qemu-img (both versions) and instar (sandboxed and not) in directories of their own, each on its own target. */
async function assertSameConvert(c: Case): Promise<void> {
  for (const version of VERSIONS) {
    const args = ['convert', ...c.options, ...c.sources.map((s) => `../${s}`), 't.raw'];
    const label = `${version}: ${args.join(' ')} (target before: ${c.before})`;
    const qdir = at(`q-${version}`);
    mkdirSync(qdir, { recursive: true });
    prepare(join(qdir, 't.raw'), c.before);
    const expected = runQemu(version, args, { cwd: qdir, timeoutMs: 30_000 });
    const expectedLeft = leftAt(join(qdir, 't.raw'));
    for (const sandbox of sandboxes(version)) {
      const idir = at(`i-${version}`);
      mkdirSync(idir, { recursive: true });
      prepare(join(idir, 't.raw'), c.before);
      const instarArgs = [...args, '--qemu-version', version, ...sandbox];
      const actual: RunResult = SHORT_TIER_IN_PROCESS && sandbox.length > 0 ? await runInProcess(instarArgs, idir) : runInstar(instarArgs, { cwd: idir, timeoutMs: 30_000 });
      const l = `${label} ${sandbox.join(' ')}`;
      assert.equal(actual.stderr, expected.stderr, l);
      assert.equal(actual.stdout, expected.stdout, l);
      assert.equal(actual.status, expected.status, l);
      assert.equal(leftAt(join(idir, 't.raw')), expectedLeft, `${l}: the target left`);
    }
  }
}

const P = ['-f', 'parallels', '-O', 'raw'];

describe('a negative sector count', () => {
  // qemu words it "Could not get size of X: …" on every path, never after "Could not open".
  for (const before of ['none', 'data'] as const) {
    test(`target ${before}`, () => assertSameConvert({ sources: ['negative-eperm.hds'], options: P, before }));
  }
  test('-n', () => assertSameConvert({ sources: ['negative.hds'], options: ['-n', ...P], before: 'data' }));
  test('-n, after an overflowing source', () => assertSameConvert({ sources: ['efbig.hds', 'negative-eperm.hds'], options: ['-n', ...P], before: 'sparse' }));
  test('target exists, after an overflowing source', () => assertSameConvert({ sources: ['efbig.hds', 'good.hds', 'negative.hds'], options: P, before: 'data' }));
});

describe('a sector count past int64 bytes', () => {
  // -n compares the sector total, not its wrapped byte size: always smaller.
  // -n leaves the target untouched whatever it holds: the short tier takes a target of data, the long tier a sparse one too.
  for (const before of tiered(['data', 'sparse'] as const, (b) => b === 'data')) {
    for (const image of ['efbig.hds', 'efbig-zero.hds']) {
      test(`-n, ${image}, target ${before}`, () => assertSameConvert({ sources: [image], options: ['-n', ...P], before }));
    }
  }
  test('-n, second source', () => assertSameConvert({ sources: ['good.hds', 'efbig.hds'], options: ['-n', ...P], before: 'sparse' }));
  // The target is made with the wrapped size, then the block status fails: the target stays.
  for (const before of ['none', 'data'] as const) {
    for (const image of ['efbig.hds', 'efbig-zero.hds']) {
      test(`${image}, target ${before}`, () => assertSameConvert({ sources: [image], options: P, before }));
    }
    test(`-p, second source, target ${before}`, () => assertSameConvert({ sources: ['good.hds', 'efbig.hds'], options: ['-p', ...P], before }));
  }
});

describe('vmdk extents summing past int64 bytes', () => {
  for (const image of ['vmdk-efbig.vmdk', 'vmdk-negative.vmdk']) {
    for (const before of ['none', 'data'] as const) test(`${image}, target ${before}`, () => assertSameConvert({ sources: [image], options: ['-O', 'raw'], before }));
    test(`-n ${image}`, () => assertSameConvert({ sources: [image], options: ['-n', '-O', 'raw'], before: 'data' }));
  }
});

describe('a backing file whose block status fails', () => {
  for (const before of ['none', 'data'] as const) {
    for (const image of ['top.qcow2', 'top-data.qcow2']) {
      test(`${image}, target ${before}`, () => assertSameConvert({ sources: [image], options: ['-O', 'raw'], before }));
      // -p prints the same opening line whatever the target held: over a target of data in the long tier only.
      (before === 'none' ? test : longTest)(`-p ${image}, target ${before}`, () => assertSameConvert({ sources: [image], options: ['-p', '-O', 'raw'], before }));
    }
  }
  // -n: qemu leaves the target untouched (its pass over the block status comes before any write).
  for (const image of ['top.qcow2', 'top-data.qcow2']) {
    test(`-n ${image}`, () => assertSameConvert({ sources: [image], options: ['-n', '-O', 'raw'], before: 'disk' }));
    // -S 0 changes nothing before the failing pass: top-data.qcow2's case (data either side of the failure) in the short tier.
    (image === 'top-data.qcow2' ? test : longTest)(`-n -S 0 ${image}`, () => assertSameConvert({ sources: [image], options: ['-n', '-S', '0', '-O', 'raw'], before: 'disk' }));
  }
  test('-n -p --target-is-zero', () => assertSameConvert({ sources: ['top-data.qcow2'], options: ['-n', '-p', '--target-is-zero', '-O', 'raw'], before: 'disk' }));
  test('the second source', () => assertSameConvert({ sources: ['good.hds', 'top-data.qcow2'], options: ['-O', 'raw'], before: 'none' }));
});
