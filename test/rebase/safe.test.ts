// Safe rebase (no -u) of qcow2 images, differential against qemu-img 7.2 and 10.0: stdout (-p
// percentages included), stderr, exit status and the top byte for byte (qemu's copy loop is
// sequential, so its allocation is deterministic); then crash safety of every write prefix, and
// refusals before any write.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { VERSIONS, runInstar, runQemu } from '../helpers/oracles.ts';
import { assertSameOutcome, safeRebaseInDir } from './harness.ts';
import { ImageBuilder } from '../commit/harness.ts';
import { TwinDirs } from '../check/fast-dirs.ts';
// In the long tier its unsandboxed instar runs launch the built CLI as before (check/instar-sync.ts).
import '../helpers/long.ts';

const builder = new ImageBuilder();
const twins = new TwinDirs();
const chains: Record<string, Record<string, Uint8Array>> = {};

before(() => {
  chains.basic = builder.chain([
    { name: 'old.qcow2', create: ['-f', 'qcow2'], size: '6M', writes: ['write -P 1 0 128k', 'write -P 2 1M 4k', 'write -P 3 4M 64k'] },
    { name: 'new.qcow2', create: ['-f', 'qcow2'], size: '6M', writes: ['write -P 1 0 64k', 'write -P 9 3M 64k'] },
    { name: 't.qcow2', create: ['-f', 'qcow2', '-b', 'old.qcow2', '-F', 'qcow2'], size: '6M', writes: ['write -P 5 4M 64k'] },
  ]);
  // An old backing file shorter than the top (7.2 cuts its chunk there; zeros past it), a
  // larger raw new backing file, 4 KiB clusters in the top, a compat=0.10 top.
  chains.sizes = builder.chain([
    { name: 'old.qcow2', create: ['-f', 'qcow2'], size: '3584k', writes: ['write -P 1 0 3584k'] },
    { name: 'new.raw', create: ['-f', 'raw'], size: '5M', writes: ['write -P 1 0 1M', 'write -P 7 4M 8k'], format: 'raw' },
    { name: 't.qcow2', create: ['-f', 'qcow2', '-o', 'cluster_size=4096', '-b', 'old.qcow2', '-F', 'qcow2'], size: '5M', writes: ['write -P 5 2M 4k'] },
    { name: 'v2.qcow2', create: ['-f', 'qcow2', '-o', 'compat=0.10', '-b', 'old.qcow2', '-F', 'qcow2'], size: '5M', writes: ['write -P 5 0 4k'] },
  ]);
  // A top larger than the images between it and the new backing file (found by the generative
  // hunt: instar's walk of the old chain ran past its end, "the image reported an empty extent").
  chains.short = builder.chain([
    { name: 'base.qcow2', create: ['-f', 'qcow2'], size: '3M', writes: ['write -P 1 0 3M'] },
    { name: 'mid.qcow2', create: ['-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2'], size: '3584k', writes: ['write -P 2 1M 64k', 'write -P 3 3M 512k'] },
    { name: 't.qcow2', create: ['-f', 'qcow2', '-o', 'cluster_size=4096', '-b', 'mid.qcow2', '-F', 'qcow2'], size: '5M', writes: ['write -P 5 2M 4k'] },
  ]);
  // A top with an internal snapshot: its L2 tables are shared, qemu copies one before writing
  // into it (found by the generative hunt: instar refused).
  chains.snapshot = builder.chain([
    { name: 'old.qcow2', create: ['-f', 'qcow2'], size: '4M', writes: ['write -P 1 0 4M'] },
    { name: 'new.qcow2', create: ['-f', 'qcow2'], size: '4M', writes: ['write -P 2 1M 1M'] },
    { name: 't.qcow2', create: ['-f', 'qcow2', '-o', 'cluster_size=4096', '-b', 'old.qcow2', '-F', 'qcow2'], size: '4M', writes: ['write -P 3 0 64k', 'write -P 4 3M 64k'] },
  ]);
  // Tops of other formats: qemu copies what differs, then fails to change the backing file
  // (only qcow2 and qed can); with nothing to copy instar gives the same answer (the hunt found
  // it refusing them all).
  chains.formats = builder.chain([
    { name: 'z.qcow2', create: ['-f', 'qcow2'] },
    { name: 'a.qcow2', create: ['-f', 'qcow2'], writes: ['write -P 9 3M 64k'] },
    { name: 'r.raw', create: ['-f', 'raw'], writes: ['write -P 1 0 64k'], format: 'raw' },
    { name: 'f.vhd', create: ['-f', 'vpc', '-o', 'subformat=fixed'] },
    { name: 'd.vhd', create: ['-f', 'vpc'], writes: ['write -P 1 0 64k'], format: 'vpc' },
    { name: 'x.vhdx', create: ['-f', 'vhdx'] },
    { name: 'k.vmdk', create: ['-f', 'vmdk'] },
    { name: 'e.qed', create: ['-f', 'qed'] },
    // A version 2 top without a backing file: qemu's zero writes there are discards (hunt, campaign 400).
    { name: 'v2.qcow2', create: ['-f', 'qcow2', '-o', 'compat=0.10'], writes: ['write -P 1 1M 64k'] },
    // The same with no L2 table where the new backing file has data: the discard allocates one (campaign 500).
    { name: 'v2e.qcow2', create: ['-f', 'qcow2', '-o', 'compat=0.10,cluster_size=4096'] },
  ]);
  // Nothing to copy into a top instar cannot write into (a raw external data file; bitmaps
  // whose extension instar's writer refuses): only the header change, or qemu's error for it.
  chains.nocopy = builder.chain([
    { name: 'z.qcow2', create: ['-f', 'qcow2'], writes: ['write -P 2 0 64k'] },
    { name: 'b.qcow2', create: ['-f', 'qcow2', '-b', 'z.qcow2', '-F', 'qcow2'], writes: ['write -P 3 64k 64k'] },
  ]);
  // Extended L2 tops: a hole in an allocated cluster next to a hole in an unallocated one is two
  // turns of qemu's loop, two -p steps (the hunt found instar's progress short: campaign 500 case 75).
  chains.subclusters = builder.chain([
    { name: 'zero.qcow2', create: ['-f', 'qcow2'] },
    { name: 's.qcow2', create: ['-f', 'qcow2', '-o', 'extended_l2=on'], writes: ['write -P 1 1028k 2k', 'write -P 2 3M 2k'] },
    { name: 'sb.qcow2', create: ['-f', 'qcow2', '-o', 'extended_l2=on', '-b', 'zero.qcow2', '-F', 'qcow2'], writes: ['write -P 1 1028k 2k'] },
  ]);
  const nocopy = join(builder.root, 'nocopy');
  mkdirSync(nocopy);
  for (const [name, bytes] of Object.entries(chains.nocopy)) writeFileSync(join(nocopy, name), bytes);
  assert.equal(runQemu('7.2', ['create', '-q', '-f', 'qcow2', '-o', 'data_file=d.data,data_file_raw=on', 'd.qcow2', '4M'], { cwd: nocopy }).status, 0);
  assert.equal(runQemu('7.2', ['-c', 'write -P 1 0 64k', 'd.qcow2'], { cwd: nocopy }, 'qemu-io').status, 0);
  for (const name of ['d.qcow2', 'b.qcow2']) assert.equal(runQemu('7.2', ['bitmap', '--add', name, 'b0'], { cwd: nocopy }).status, 0);
  for (const name of ['d.qcow2', 'd.data', 'b.qcow2']) chains.nocopy[name] = readFileSync(join(nocopy, name));
  // Backing files whose format is not the one named: the new one (-F) and an old one (the header).
  // qemu says "Could not open new backing file '...': ..." and "Could not open backing file: ..."
  // (the hunt found instar naming the top for both).
  chains.wrongFormat = builder.chain([
    { name: 'alt.vmdk', create: ['-f', 'vmdk'] },
    { name: 't.qcow2', create: ['-f', 'qcow2'] },
    { name: 'v.vhd', create: ['-f', 'vpc'] },
    { name: 'bad.qcow2', create: ['-f', 'qcow2', '-u', '-b', 'alt.vmdk', '-F', 'qcow2'], size: '1M' },
    // A new backing file already in the old chain: qemu reuses the node open there, so a wrong
    // -F only lands in the header (campaign 424242 cases 25 and 56: instar failed to open it).
    { name: 'onvmdk.qcow2', create: ['-f', 'qcow2', '-b', 'alt.vmdk', '-F', 'vmdk'], writes: ['write -P 1 1M 64k'] },
    { name: 'two.qcow2', create: ['-f', 'qcow2', '-b', 'onvmdk.qcow2', '-F', 'qcow2'], writes: ['write -P 2 2M 64k'] },
  ]);
  const dir = join(builder.root, 'snapshot');
  mkdirSync(dir);
  for (const [name, bytes] of Object.entries(chains.snapshot)) writeFileSync(join(dir, name), bytes);
  assert.equal(runQemu('7.2', ['snapshot', '-c', 's1', 't.qcow2'], { cwd: dir }).status, 0);
  assert.equal(runQemu('7.2', ['-c', 'write -P 5 8k 4k', 't.qcow2'], { cwd: dir }, 'qemu-io').status, 0);
  chains.snapshot['t.qcow2'] = readFileSync(join(dir, 't.qcow2'));
});
after(() => {
  builder.remove();
  twins.remove();
});

/** [chain, arguments, through the real sandbox, only under this release (the releases agree there; time is short)]. */
const CASES: [string, string[], boolean?, string?][] = [
  ['basic', ['-p', '-b', 'new.qcow2', '-F', 'qcow2', 't.qcow2'], true],
  ['basic', ['-b', 'new.qcow2', 't.qcow2'], false, '7.2'],
  ['basic', ['-b', '', 't.qcow2'], false, '10.0'],
  ['basic', ['-p', '-b', 'old.qcow2', '-F', 'qcow2', 't.qcow2'], false, '7.2'],
  ['basic', ['-p', '-b', 'missing.qcow2', '-F', 'qcow2', 't.qcow2'], false, '10.0'],
  ['basic', ['-b', 'new.qcow2', '-F', 'raw', 't.qcow2'], false, '7.2'],
  ['sizes', ['-p', '-b', 'new.raw', '-F', 'raw', 't.qcow2']],
  ['sizes', ['-p', '-b', '', 't.qcow2']],
  ['sizes', ['-b', 'new.raw', '-F', 'raw', 'v2.qcow2'], false, '10.0'],
  ['sizes', ['-p', '-q', '-b', '', '-f', 'qcow2', 'v2.qcow2'], false, '7.2'],
  // The new backing file is the old one (nothing between them), or two levels down, both shorter.
  ['sizes', ['-p', '-b', 'old.qcow2', '-F', 'qcow2', 't.qcow2']],
  ['short', ['-p', '-b', 'base.qcow2', '-F', 'qcow2', 't.qcow2']],
  ['short', ['-b', 'mid.qcow2', 't.qcow2']],
  ['snapshot', ['-p', '-b', 'new.qcow2', '-F', 'qcow2', 't.qcow2']],
  ['snapshot', ['-b', '', 't.qcow2'], true],
  ['formats', ['-f', 'raw', '-p', '-b', 'a.qcow2', '-F', 'qcow2', 'r.raw'], true],
  ['formats', ['-f', 'raw', '-b', 'a.qcow2', 'r.raw']],
  ['formats', ['-f', 'vpc', '-b', '', 'f.vhd']],
  ['formats', ['-f', 'vpc', '-p', '-b', 'a.qcow2', '-F', 'qcow2', 'd.vhd']],
  ['formats', ['-b', 'z.qcow2', '-F', 'qcow2', 'x.vhdx']],
  ['formats', ['-p', '-b', 'z.qcow2', 'k.vmdk']],
  ['formats', ['-b', 'z.qcow2', '-F', 'qcow2', 'e.qed']],
  ['formats', ['-p', '-b', 'z.qcow2', 'e.qed']],
  ['formats', ['-b', 'a.qcow2', '-F', 'qcow2', 'v2.qcow2']],
  ['formats', ['-b', 'a.qcow2', '-F', 'qcow2', 'v2e.qcow2']],
  ['wrongFormat', ['-b', 'alt.vmdk', '-F', 'qcow2', 't.qcow2'], true],
  ['wrongFormat', ['-p', '-f', 'vpc', '-b', 'alt.vmdk', '-F', 'qcow2', 'v.vhd']],
  ['wrongFormat', ['-p', '-b', '', 'bad.qcow2']],
  ['wrongFormat', ['-p', '-b', 'alt.vmdk', '-F', 'qcow2', 'onvmdk.qcow2']],
  ['wrongFormat', ['-p', '-b', 'alt.vmdk', '-F', 'qcow2', 'two.qcow2'], true],
  ['subclusters', ['-p', '-b', 'zero.qcow2', '-F', 'qcow2', 's.qcow2']],
  ['subclusters', ['-p', '-b', '', 'sb.qcow2']],
  ['nocopy', ['-b', 'z.qcow2', '-F', 'qcow2', 'd.qcow2']],
  ['nocopy', ['-p', '-b', 'z.qcow2', 'b.qcow2']],
  ['nocopy', ['-b', 'z.qcow2', '-F', 'qcow2', 'b.qcow2'], true],
];

for (const version of VERSIONS) {
  test(`safe rebase matches qemu-img ${version} byte for byte`, () => {
    for (const [chain, args, sandboxed, only] of CASES) {
      if (only !== undefined && only !== version) continue;
      const r = twins.run(version, chains[chain], ['rebase', ...args], { sandboxed: sandboxed && version === '7.2' });
      assertSameOutcome(r, Object.keys(chains[chain]), `${version} ${chain}: rebase ${args.join(' ')}`);
    }
  });
}

test('safe rebase stopped after every write: the top only leaks and reads as before', () => {
  for (const chain of ['basic', 'snapshot']) sweepCrashes(chain);
});

/** The chain rebased onto new.qcow2 in-process, stopped after 0, 1, 2... writes. */
function sweepCrashes(chain: string): void {
  const rebaseInto = (dir: string, writes: number): unknown => safeRebaseInDir(dir, chains[chain], writes);
  const original = join(builder.root, `${chain}-rebase-orig`);
  mkdirSync(original);
  for (const [name, bytes] of Object.entries(chains[chain])) writeFileSync(join(original, name), bytes);
  const done = join(builder.root, `${chain}-rebase-done`);
  const result = rebaseInto(done, Infinity);
  if (chain === 'basic') assert.deepEqual(result, { format: 'qcow2', progress: [[33.33333206176758, 1], [66.66666412353516, 1], [100, 1]], done: true });
  const final = readFileSync(join(done, 't.qcow2'));
  let k = 0;
  for (; k < 50; k++) {
    const dir = join(builder.root, `${chain}-rebase-crash${k}`);
    rebaseInto(dir, k);
    const top = join(dir, 't.qcow2');
    const check = runQemu('10.0', ['check', top]);
    assert.ok(check.status === 0 || check.status === 3, `after ${k} writes: ${check.stdout}${check.stderr}`);
    const same = runQemu('10.0', ['compare', '-q', join(original, 't.qcow2'), top]);
    assert.equal(same.status, 0, `after ${k} writes the top reads differently`);
    if (readFileSync(top).equals(final)) break;
  }
  assert.ok(k >= 5 && k < 50, `${chain}: ${k} writes`);
}

test('safe rebase refuses before writing: a new backing file outside the allowed paths, a corrupt old chain', () => {
  const dir = join(builder.root, 'refusals');
  mkdirSync(dir);
  for (const [name, bytes] of Object.entries(chains.basic)) writeFileSync(join(dir, name), bytes);
  const passwd = runInstar(['rebase', '-b', '/etc/passwd', '-F', 'raw', 't.qcow2', '--sandbox=none'], { cwd: dir });
  assert.equal(passwd.status, 1);
  assert.match(passwd.stderr, /^qemu-img: Could not change the backing file to '\/etc\/passwd': instar refuses this name .*nothing was written\n$/);
  assert.ok(readFileSync(join(dir, 't.qcow2')).equals(Buffer.from(chains.basic['t.qcow2'])));
  // Another format where data must be copied (qemu writes it into the VMDK, then fails): refused.
  const formats = join(builder.root, 'refusals-formats');
  mkdirSync(formats);
  for (const [name, bytes] of Object.entries(chains.formats)) writeFileSync(join(formats, name), bytes);
  const vmdk = runInstar(['rebase', '-b', 'a.qcow2', '-F', 'qcow2', 'k.vmdk', '--sandbox=none'], { cwd: formats });
  assert.equal(vmdk.stderr, 'qemu-img: instar copies data in a safe rebase of qcow2 and qed images only (this is vmdk); use -u to change only the backing file name; nothing was written\n');
  assert.ok(readFileSync(join(formats, 'k.vmdk')).equals(Buffer.from(chains.formats['k.vmdk'])));
  // The old backing file's L1 entry misaligned: the read fails before the first write.
  const old = Buffer.from(chains.basic['old.qcow2']);
  const l1 = Number(old.readBigUInt64BE(40));
  old.writeBigUInt64BE(old.readBigUInt64BE(l1) + 0x200n, l1);
  writeFileSync(join(dir, 'old.qcow2'), old);
  const corrupt = runInstar(['rebase', '-b', 'new.qcow2', '-F', 'qcow2', 't.qcow2'], { cwd: dir });
  assert.equal(corrupt.status, 1);
  assert.match(corrupt.stderr, /qemu-img: Could not open 't\.qcow2': Input\/output error\n$/);
  assert.ok(readFileSync(join(dir, 't.qcow2')).equals(Buffer.from(chains.basic['t.qcow2'])));
  assert.ok(readFileSync(join(dir, 'old.qcow2')).equals(old));
});
