// commit into a VMDK base whose own parent changed after it was made (its parentCID no longer the
// parent's CID): qemu's vmdk driver writes into the base's allocated grains but fails its first
// allocating write with EINVAL, which ends the commit job ("Block job failed: Invalid argument")
// with the writes before it done; a commit that allocates nothing succeeds. Against qemu-img 7.2
// and 10.0: output and status, every file byte-identical but for the base's new random CID.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { VERSIONS } from '../helpers/oracles.ts';
import { TwinDirs } from '../rebase/harness.ts';
import { ImageBuilder } from './harness.ts';

const builder = new ImageBuilder();
const twins = new TwinDirs();
const NAMES = ['base0.vmdk', 'base1.vmdk', 'top.vmdk'];

/** base0 <- base1 <- top, base1 holding grains at 0 and 1M; base0 replaced by one with another CID (as a write to it gives it). */
function chain(topWrites: string[]): Record<string, Uint8Array> {
  const files = builder.chain([
    { name: 'base0.vmdk', create: ['-f', 'vmdk'] },
    { name: 'base1.vmdk', create: ['-f', 'vmdk', '-b', 'base0.vmdk', '-F', 'vmdk'], writes: ['write -P 1 0 64k', 'write -P 2 1M 64k'], format: 'vmdk' },
    { name: 'top.vmdk', create: ['-f', 'vmdk', '-b', 'base1.vmdk', '-F', 'vmdk'], writes: topWrites, format: 'vmdk' },
  ]);
  const changed = builder.chain([{ name: 'base0.vmdk', create: ['-f', 'vmdk'], writes: ['write -P 9 3M 4k'], format: 'vmdk' }]);
  return { ...files, 'base0.vmdk': changed['base0.vmdk'] };
}

let failing: Record<string, Uint8Array>;
let allocatedOnly: Record<string, Uint8Array>;
before(() => {
  // The top's grain at 0 lands on base1's allocated grain; the one at 2M needs a new grain.
  failing = chain(['write -P 3 0 64k', 'write -P 4 2M 4k']);
  allocatedOnly = chain(['write -P 5 0 4k', 'write -P 6 1M 64k']);
});
after(() => {
  builder.remove();
  twins.remove();
});

/** The file with its CID value blanked (qemu writes a random one). */
function withoutCid(file: string): string {
  return readFileSync(file).toString('latin1').replace(/\nCID=[0-9a-f]+\n/, '\nCID=?\n');
}

function assertSameFiles(r: ReturnType<TwinDirs['run']>, label: string): void {
  for (const f of NAMES) assert.equal(withoutCid(join(r.instarDir, f)), withoutCid(join(r.qemuDir, f)), `${label}: ${f} differs from qemu-img's`);
}

test('commit into a vmdk base with a stale parentCID: the first allocating write fails the job as in qemu-img, the writes before it done', () => {
  for (const v of VERSIONS) {
    const r = twins.run(v, failing, ['commit', 'top.vmdk']);
    assert.deepEqual([r.instar.status, r.instar.stdout, r.instar.stderr], [r.qemu.status, r.qemu.stdout, r.qemu.stderr], v);
    assert.equal(r.qemu.stderr, 'qemu-img: Block job failed: Invalid argument\n', v);
    assertSameFiles(r, v);
    // The grain at 0 was written (base1 holds the top's bytes there), and base1's CID is new.
    assert.notEqual(readFileSync(join(r.instarDir, 'base1.vmdk')).toString('latin1'), Buffer.from(failing['base1.vmdk']).toString('latin1'), v);
  }
});

test('commit -p into a vmdk base with a stale parentCID: the progress up to the failing operation', () => {
  for (const v of VERSIONS) {
    const r = twins.run(v, failing, ['commit', '-p', 'top.vmdk']);
    // qemu prints 0% at each wake of its event loop (how many: its timing); the rest is the same.
    const zerosOnce = (s: string) => s.replace(/( {4}\(0\.00\/100%\)\r)+/, '    (0.00/100%)\r');
    assert.equal(r.instar.stdout, '    (0.00/100%)\r    (50.00/100%)\r\n', v);
    assert.equal(r.instar.stdout, zerosOnce(r.qemu.stdout), v);
    assert.deepEqual([r.instar.status, r.instar.stderr], [r.qemu.status, r.qemu.stderr], v);
  }
});

test('commit into a vmdk base with a stale parentCID that allocates nothing succeeds as in qemu-img', () => {
  for (const v of VERSIONS) {
    const r = twins.run(v, allocatedOnly, ['commit', 'top.vmdk']);
    assert.deepEqual([r.instar.status, r.instar.stdout, r.instar.stderr], [r.qemu.status, r.qemu.stdout, r.qemu.stderr], v);
    assert.equal(r.qemu.stdout, 'Image committed.\n', v);
    assertSameFiles(r, v);
  }
});
