// convert of sources whose reads fail, against both oracles. Without --salvage: qemu's one error
// ("error while reading at byte N" naming qemu's failing chunk; a failed block status with qcow2's
// corruption notice first), exit 1; after a failed read qemu leaves a half-written target, instar
// none (by design, DESIGN.md §1); after a failed block status both leave the target as created. With --salvage: qemu's warning per unreadable 512-byte sector (offset in its
// source), those sectors as zeros; a failed block status warned per sector in qemu's counting
// walk and again in its copy; exit 0, and a target byte-identical to qemu-img's (raw, qcow2, -c,
// -n, -p, two sources); -q drops the warnings (not qcow2's corruption notice).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runTool, sameAsOracles, scratch } from './harness.ts';
import { buildSalvageSources } from './salvage-fixtures.ts';
import { VERSIONS } from '../helpers/oracles.ts';
import { parseGuestMessage } from '../../src/host/sandbox/guest-messages.ts';

const work = scratch();
const dir = work.dir;
before(() => buildSalvageSources(dir));
after(() => work.cleanup());

const MiB = 1024 * 1024;

/**
 * convert `args` into an existing file (one per tool, outside the run directories): a raw file of
 * `initial` bytes of 0x5a, or a copy of the image `initial` names; instar under each profile: the
 * same status, stdout, stderr and target bytes.
 */
function intoExisting(label: string, args: string[], initial: number | string): Map<string, { stderr: string; target: Buffer }> {
  const out = new Map<string, { stderr: string; target: Buffer }>();
  for (const tool of [...VERSIONS, 'instar'] as const) {
    for (const profile of tool === 'instar' ? VERSIONS : [tool]) {
      const name = `${label}-${tool}-${profile}.${typeof initial === 'number' ? 'raw' : initial.split('.').at(-1)}`;
      writeFileSync(join(dir, name), typeof initial === 'number' ? Buffer.alloc(initial, 0x5a) : readFileSync(join(dir, initial)));
      const { result } = runTool(tool, dir, `${label}-${tool}-${profile}`, [...(tool === 'instar' ? [`--qemu-version=${profile}`] : []), 'convert', ...args, `../${name}`]);
      const target = readFileSync(join(dir, name));
      const key = tool === 'instar' ? `instar-${profile}` : tool;
      out.set(key, { stderr: result.stderr, target });
      if (tool !== 'instar') continue;
      const theirs = out.get(profile)!;
      assert.equal(result.stderr, theirs.stderr, `${label} (${profile}): stderr`);
      assert.equal(result.status, theirs.stderr === '' || args.includes('--salvage') ? 0 : 1, `${label} (${profile}): status`);
      assert.ok(target.equals(theirs.target), `${label} (${profile}): the target's bytes`);
    }
  }
  return out;
}

/** Runs the case against both oracles; without --salvage no target may be left behind. */
function same(label: string, args: string[], o: { files?: boolean; sandbox?: boolean; profile?: number; instarOptions?: string[] } = {}): string {
  const outcomes = sameAsOracles(dir, ['convert', ...args], { label, files: o.files, sandbox: o.sandbox, instarOptions: o.instarOptions, profiles: o.profile === undefined ? undefined : [VERSIONS[o.profile]] });
  if (o.files === false) for (const { files } of outcomes) assert.deepEqual([...files.keys()], [], `${label}: instar leaves no target`);
  return outcomes[0].result.stderr;
}

describe('a failed read without --salvage', () => {
  test('compressed qcow2 clusters that do not inflate: the first one named', () => {
    assert.equal(same('read-qcow2', ['-O', 'raw', '../comp.qcow2', 't.raw'], { files: false }), 'qemu-img: error while reading at byte 196608: Input/output error\n');
  });
  test('a streamOptimized VMDK grain: qemu\'s chunk is the grain, not the merged data run', () => {
    assert.equal(same('read-vmdk', ['-O', 'raw', '../grain.vmdk', 't.raw'], { files: false }), 'qemu-img: error while reading at byte 65536: Invalid argument\n');
    same('read-vmdk-qcow2', ['-O', 'qcow2', '../grain.vmdk', 't.qcow2'], { files: false });
  });
  test('a misaligned L2 entry: qcow2\'s corruption notice, then the block-status error (the target stays, as made)', () => {
    const stderr = same('status-entry', ['-O', 'raw', '../entry.qcow2', 't.raw']);
    assert.match(stderr, /^qcow2: Image is corrupt: Cluster allocation offset 0x60200 unaligned .*\nqemu-img: error while reading block status at offset 65536: Input\/output error\n$/);
    // qemu's new qcow2 stays as created (empty, its data file too): the walk fails before any write.
    same('status-table', ['-O', 'qcow2', '-o', 'data_file=t.data', '../table.qcow2', 't.qcow2']);
  });
  test('-n: the notice and the error from the walk before any write; the target untouched', () => {
    const outcomes = intoExisting('status-n', ['-n', '-O', 'raw', '../entry.qcow2'], 2 * MiB);
    assert.match(outcomes.get('10.0')!.stderr, /^qcow2: Image is corrupt: .*\nqemu-img: error while reading block status at offset 65536: /);
    for (const [tool, o] of outcomes) assert.ok(o.target.equals(Buffer.alloc(2 * MiB, 0x5a)), `${tool} left the target as it was`);
  });
});

describe('--salvage', () => {
  test('compressed qcow2 clusters: a warning per sector, zeros, -O raw identical', () => {
    const stderr = same('salvage-raw', ['--salvage', '-O', 'raw', '../comp.qcow2', 't.raw']);
    const lines = stderr.split('\n').filter(Boolean);
    assert.equal(lines.length, 3 * 128);
    assert.equal(lines[0], 'qemu-img: warning: error while reading offset 196608: Input/output error');
  });
  test('into qcow2, compressed qcow2 (-c) and with -S 0: identical images', () => {
    same('salvage-qcow2', ['--salvage', '-O', 'qcow2', '../comp.qcow2', 't.qcow2'], { profile: 0 });
    same('salvage-c', ['--salvage', '-c', '-O', 'qcow2', '../comp.qcow2', 't.qcow2'], { profile: 1 });
    same('salvage-S0', ['--salvage', '-S', '0', '-O', 'raw', '../grain.vmdk', 't.raw'], { profile: 0 });
  });
  test('two sources: each warning names the offset in its own source', () => {
    same('salvage-two', ['--salvage', '-O', 'raw', '../grain.vmdk', '../comp.qcow2', 't.raw'], { profile: 1 });
  });
  test('-p prints qemu\'s lines, -q no warnings', () => {
    same('salvage-p', ['--salvage', '-p', '-O', 'raw', '../comp.qcow2', 't.raw'], { profile: 0 });
    assert.equal(same('salvage-q', ['--salvage', '-q', '-O', 'raw', '../comp.qcow2', 't.raw'], { profile: 1 }), '');
  });
  test('a misaligned L2 entry: each sector\'s block status warned in qemu\'s walk, then again with its read while copying', () => {
    const stderr = same('salvage-status', ['--salvage', '-O', 'raw', '../entry.qcow2', 't.raw']);
    const lines = stderr.split('\n').filter(Boolean);
    assert.match(lines[0], /^qcow2: Image is corrupt: Cluster allocation offset 0x60200 unaligned /);
    assert.equal(lines.length, 1 + 128 * 3);
    assert.equal(lines[129], 'qemu-img: warning: error while reading block status at offset 65536: Input/output error');
    assert.equal(lines[130], 'qemu-img: warning: error while reading offset 65536: Input/output error');
    same('salvage-status-c', ['--salvage', '-c', '-O', 'qcow2', '../entry.qcow2', 't.qcow2'], { profile: 0 });
    // -q: qcow2's notice is the driver's own fprintf, printed all the same.
    same('salvage-status-q', ['--salvage', '-q', '-p', '-O', 'qcow2', '../entry.qcow2', 't.qcow2'], { profile: 1 });
  });
  test('a misaligned L1 entry: every sector of the disk, through the sandbox', () => {
    same('salvage-table', ['--salvage', '-O', 'qcow2', '../table.qcow2', 't.qcow2'], { sandbox: true, profile: 0 });
  });
  test('-B (a target over a backing file), plain and -c: failed reads and block status as qemu', () => {
    const over = (b: string) => ['--salvage', '-B', `../${b}`, '-F', 'qcow2', '-O', 'qcow2'];
    const allow = { instarOptions: ['--allow-path', dir] };
    same('salvage-B', [...over('over6.qcow2'), '../comp.qcow2', 't.qcow2'], { profile: 0, ...allow });
    same('salvage-B-status-c', ['-c', ...over('over2.qcow2'), '../entry.qcow2', 't.qcow2'], { profile: 1, ...allow });
  });
  test('-n into an existing qcow2 and VDI image: the same bytes as qemu writes', () => {
    intoExisting('salvage-n-qcow2', ['-n', '--salvage', '-O', 'qcow2', '../comp.qcow2'], 'into.qcow2');
    intoExisting('salvage-n-vdi', ['-n', '--salvage', '-O', 'vdi', '../entry.qcow2'], 'into.vdi');
  });
  test('-n into an existing raw file: the same bytes as qemu writes', () => {
    intoExisting('salvage-n-status', ['-n', '--salvage', '-O', 'raw', '../entry.qcow2'], 2 * MiB);
    intoExisting('salvage-n', ['-n', '--salvage', '-O', 'raw', '../comp.qcow2'], 6 * MiB);
  });
  test('through the sandbox (the warnings cross the protocol)', () => {
    same('salvage-sandbox', ['--salvage', '-O', 'qcow2', '../grain.vmdk', 't.qcow2'], { sandbox: true, profile: 1 });
  });
});

test('the host checks the guest\'s unreadable messages', () => {
  const ok = { type: 'unreadable', kind: 'read', offset: 512, length: 1024, reason: 'Input/output error' };
  assert.deepEqual(parseGuestMessage(JSON.stringify(ok)), ok);
  for (const bad of [
    { ...ok, kind: 'write' }, { ...ok, offset: 100 }, { ...ok, length: 0 }, { ...ok, length: 4 * 1024 * 1024 },
    { ...ok, offset: -512 }, { ...ok, reason: 5 }, { ...ok, extra: 1 }, { ...ok, offset: 2 ** 60 }, { ...ok, notice: 5 },
  ]) assert.equal(typeof parseGuestMessage(JSON.stringify(bad)), 'string', JSON.stringify(bad));
  const escaped = parseGuestMessage(JSON.stringify({ ...ok, kind: 'block-status', reason: 'a\u001b[2Jb', notice: 'qcow2: x\u001b]0;y' }));
  assert.ok(typeof escaped === 'object' && escaped.type === 'unreadable' && !escaped.reason.includes('\u001b') && !escaped.notice?.includes('\u001b'));
});
