// The mutating hunt's table of documented refusals (generative/documented.ts): the step README.md
// names (a safe rebase copying into a VMDK top), run as the hunt runs it (qemu-img, and instar
// in-process), is recognised under both versions; the same refusal against a qemu that succeeded,
// or another refusal, is not (those stay findings).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { VERSIONS, oracle, runQemu, type RunResult } from '../helpers/oracles.ts';
import { runInProcess } from '../helpers/in-process.ts';
import { ImageBuilder } from '../commit/harness.ts';
import { documentedRefusal } from './generative/documented.ts';

const builder = new ImageBuilder();
let files: Record<string, Uint8Array>;

before(() => {
  files = builder.chain([
    { name: 'a.qcow2', create: ['-f', 'qcow2'], writes: ['write -P 9 3M 64k'] },
    { name: 'k.vmdk', create: ['-f', 'vmdk'] },
  ]);
});
after(() => builder.remove());

/** One directory per side, the hunt's way of running each. */
async function both(version: (typeof VERSIONS)[number], args: string[]): Promise<{ qemu: RunResult; instar: RunResult }> {
  const dirs = ['q', 'i'].map((side) => join(builder.root, `${version}-${side}-${args.length}`));
  for (const dir of dirs) {
    mkdirSync(dir, { recursive: true });
    for (const [name, bytes] of Object.entries(files)) writeFileSync(join(dir, name), bytes);
  }
  const qemu = runQemu(version, args, { cwd: dirs[0] });
  qemu.stderr = qemu.stderr.split(oracle(version)).join('qemu-img');
  const instar = await runInProcess(['--sandbox=none', `--qemu-version=${version}`, ...args], dirs[1]);
  return { qemu, instar };
}

for (const version of VERSIONS) {
  test(`the hunt counts a safe rebase copying into a vmdk as documented (qemu-img ${version})`, async () => {
    for (const args of [['rebase', '-b', 'a.qcow2', '-F', 'qcow2', 'k.vmdk'], ['rebase', '-p', '-b', 'a.qcow2', 'k.vmdk']]) {
      const { qemu, instar } = await both(version, args);
      assert.equal(qemu.status, 1, qemu.stderr);
      assert.match(documentedRefusal(qemu, instar) ?? 'not documented', /README: known differences/, `${args.join(' ')}: ${qemu.stderr}${instar.stderr}`);
      // qemu succeeding there, or instar refusing for another reason, is a finding again.
      assert.equal(documentedRefusal({ ...qemu, status: 0, stderr: '' }, instar), undefined);
      assert.equal(documentedRefusal(qemu, { ...instar, stderr: 'qemu-img: instar cannot write into this qcow2 image (x); nothing was written\n' }), undefined);
    }
  });
}
