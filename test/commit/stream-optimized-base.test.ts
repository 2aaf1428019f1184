// commit into a streamOptimized VMDK base: qemu's vmdk driver writes each grain of such an
// extent once, so a copy onto a grain the base already holds fails the job ("Could not write to
// allocated cluster for streamOptimized", once per failing operation in flight, then "Block job
// failed: Input/output error", exit 1). Where every grain the copy touches is held, qemu writes
// nothing: output (repeats aside) and files byte for byte against qemu-img 7.2 and 10.0 (a top with a persistent bitmap included: its close stores
// it anew). Where some are free, qemu writes those first in an order its timing decides: the same
// words and status, instar's files unchanged. An empty base (qemu appends new grains) is still
// refused in instar's words, with nothing written.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { VERSIONS, runQemu } from '../helpers/oracles.ts';
import { TwinDirs, assertSameOutcome } from '../rebase/harness.ts';

const twins = new TwinDirs();
const chains: Record<string, Record<string, Uint8Array>> = {};

/** A streamOptimized base made from a raw disk with `baseWrites`, a qcow2 top over it with `topWrites`. */
function chain(name: string, baseWrites: string[], topWrites: string[], bitmap = false): Record<string, Uint8Array> {
  const dir = join(twins.root, `build-${name}`);
  mkdirSync(dir);
  const ok = (r: { status: number | null; stderr: string }) => assert.equal(r.status, 0, r.stderr);
  ok(runQemu('7.2', ['create', '-q', '-f', 'raw', 'r.raw', '4M'], { cwd: dir }));
  if (baseWrites.length > 0) ok(runQemu('7.2', ['-f', 'raw', ...baseWrites.flatMap((w) => ['-c', w]), 'r.raw'], { cwd: dir }, 'qemu-io'));
  ok(runQemu('7.2', ['convert', '-f', 'raw', '-O', 'vmdk', '-o', 'subformat=streamOptimized', 'r.raw', 'b.vmdk'], { cwd: dir }));
  ok(runQemu('7.2', ['create', '-q', '-f', 'qcow2', '-b', 'b.vmdk', '-F', 'vmdk', 't.qcow2'], { cwd: dir }));
  if (bitmap) ok(runQemu('7.2', ['bitmap', '--add', 't.qcow2', 'b0'], { cwd: dir }));
  ok(runQemu('7.2', ['-f', 'qcow2', ...topWrites.flatMap((w) => ['-c', w]), 't.qcow2'], { cwd: dir }, 'qemu-io'));
  return { 'b.vmdk': readFileSync(join(dir, 'b.vmdk')), 't.qcow2': readFileSync(join(dir, 't.qcow2')) };
}

before(() => {
  const held = ['write -P 3 8k 4k', 'write -P 4 512k 64k', 'write -z 900k 4k'];
  chains.held = chain('held', ['write -P 1 0 1M'], held);
  chains.heldBitmap = chain('held-bitmap', ['write -P 1 0 1M'], held, true);
  chains.mixed = chain('mixed', ['write -P 1 0 1M'], ['write -P 3 8k 4k', 'write -P 4 2M 64k', 'write -P 5 3M 4k']);
  chains.empty = chain('empty', [], ['write -P 3 8k 4k']);
});
after(() => twins.remove());

const REWRITE = 'qemu-img: Could not write to allocated cluster for streamOptimized\n';
const FAILED = `${REWRITE}qemu-img: Block job failed: Input/output error\n`;
/**
 * qemu prints its driver's words once per failing operation among those in flight when the
 * first fails, which its timing decides (1 to 16 seen for one image): repeats count once.
 */
const once = (stderr: string): string => stderr.split('\n').filter((l, i, all) => i === 0 || l !== all[i - 1]).join('\n');

test('commit onto grains a streamOptimized base holds: qemu-img\'s failure, files byte for byte', () => {
  for (const v of VERSIONS) {
    for (const [name, args] of [['held', ['commit', 't.qcow2']], ['held', ['commit', '-d', 't.qcow2']], ['heldBitmap', ['commit', 't.qcow2']]] as const) {
      const r = twins.run(v, chains[name], [...args]);
      const label = `qemu-img ${v} ${args.join(' ')} (${name})`;
      assert.equal(once(r.qemu.stderr), FAILED, label);
      // Three operations (two copies, a zero write), each onto a held grain: issued before the first fails.
      assert.equal(r.instar.stderr, REWRITE.repeat(3) + FAILED.slice(REWRITE.length), `${label}: stderr`);
      assertSameOutcome({ ...r, instar: { ...r.instar, stderr: r.qemu.stderr } }, ['b.vmdk', 't.qcow2'], label);
    }
  }
});

test('commit onto held and free grains: the same failure, instar writes nothing', () => {
  for (const v of VERSIONS) {
    const r = twins.run(v, chains.mixed, ['commit', 't.qcow2']);
    assert.equal(once(r.qemu.stderr), FAILED, v);
    assert.equal(once(r.instar.stderr), FAILED, `${v}: stderr`);
    assert.equal(r.instar.stdout, r.qemu.stdout, `${v}: stdout`);
    assert.equal(r.instar.status, 1, `${v}: status`);
    for (const f of ['b.vmdk', 't.qcow2']) assert.ok(readFileSync(join(r.instarDir, f)).equals(Buffer.from(chains.mixed[f])), `${v}: ${f} unchanged`);
  }
});

test('commit into an empty streamOptimized base: refused in instar\'s words, nothing written', () => {
  const r = twins.run('10.0', chains.empty, ['commit', 't.qcow2']);
  assert.equal(r.qemu.status, 0, r.qemu.stderr);
  assert.equal(r.instar.status, 1);
  assert.match(r.instar.stderr, /^qemu-img: instar cannot commit into an existing vmdk image \(-n\) of subformat streamOptimized yet; nothing was written\n$/);
  for (const f of ['b.vmdk', 't.qcow2']) assert.ok(readFileSync(join(r.instarDir, f)).equals(Buffer.from(chains.empty[f])), `${f} unchanged`);
});
