// commit into a VMDK base whose data lives in extent files of its own (monolithicFlat,
// twoGbMaxExtentFlat, twoGbMaxExtentSparse): the host grants the base's extents for writing too,
// as qemu's vmdk driver writes them. Against qemu-img 7.2 and 10.0: output and status, the top
// and flat extents byte-identical, the base reading the same (a sparse extent's grains are laid
// out in the order qemu's mirror writes them, and the descriptor gets a random CID).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { VERSIONS, runQemu } from '../helpers/oracles.ts';
import { TwinDirs } from '../rebase/harness.ts';
import { ImageBuilder, sameDisk } from './harness.ts';

const builder = new ImageBuilder();
const twins = new TwinDirs();
const SUBFORMATS = ['monolithicFlat', 'twoGbMaxExtentFlat', 'twoGbMaxExtentSparse'];
const chains: Record<string, Record<string, Uint8Array>> = {};

before(() => {
  for (const sub of SUBFORMATS) {
    const dir = join(builder.root, sub);
    mkdirSync(dir);
    const ok = (args: string[], tool: 'qemu-img' | 'qemu-io' = 'qemu-img') => assert.equal(runQemu('7.2', args, { cwd: dir }, tool).status, 0, args.join(' '));
    ok(['create', '-q', '-f', 'vmdk', '-o', `subformat=${sub}`, 'b.vmdk', '8M']);
    ok(['-f', 'vmdk', '-c', 'write -P 1 0 1M', 'b.vmdk'], 'qemu-io');
    ok(['create', '-q', '-f', 'qcow2', '-b', 'b.vmdk', '-F', 'vmdk', 't.qcow2']);
    ok(['-f', 'qcow2', '-c', 'write -P 2 512k 1M', '-c', 'write -z 4M 64k', '-c', 'write -P 3 7M 4k', 't.qcow2'], 'qemu-io');
    chains[sub] = Object.fromEntries(readdirSync(dir).map((f) => [f, readFileSync(join(dir, f))]));
  }
});
after(() => {
  builder.remove();
  twins.remove();
});

for (const sub of SUBFORMATS) {
  test(`commit into a ${sub} VMDK base: written through its extent files as qemu-img writes them`, () => {
    for (const v of VERSIONS) {
      const label = `${v} ${sub}`;
      const r = twins.run(v, chains[sub], ['commit', 't.qcow2']);
      assert.deepEqual([r.instar.status, r.instar.stdout, r.instar.stderr], [r.qemu.status, r.qemu.stdout, r.qemu.stderr], label);
      assert.equal(r.qemu.stdout, 'Image committed.\n', label);
      for (const f of Object.keys(chains[sub]).filter((n) => n === 't.qcow2' || /-f\d+\.vmdk$|-flat\.vmdk$/.test(n))) {
        assert.ok(readFileSync(join(r.instarDir, f)).equals(readFileSync(join(r.qemuDir, f))), `${label}: ${f} differs from qemu-img's`);
      }
      assert.ok(sameDisk(v, join(r.instarDir, 'b.vmdk'), join(r.qemuDir, 'b.vmdk'), 'vmdk'), `${label}: the base reads differently`);
      assert.ok(!sameDisk(v, join(r.instarDir, 'b.vmdk'), join(builder.root, sub, 'b.vmdk'), 'vmdk'), `${label}: the base was written`);
    }
  });
}
