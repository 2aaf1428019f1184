// Safe rebase of a VMDK top where data would be copied: an intended difference (README, "Known
// differences"). qemu copies what the old chain shows into the VMDK, then fails to change its
// backing file (its vmdk driver cannot name one) and exits 1 with the image changed; instar
// refuses before the first write, with a message that says so.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { VERSIONS } from '../helpers/oracles.ts';
import { TwinDirs } from './harness.ts';
import { ImageBuilder } from '../commit/harness.ts';

const builder = new ImageBuilder();
const twins = new TwinDirs();
let files: Record<string, Uint8Array>;

before(() => {
  // The new backing file has data where the (absent) old chain reads zeros: qemu copies those
  // zeros into the VMDK, allocating a grain.
  files = builder.chain([
    { name: 'a.qcow2', create: ['-f', 'qcow2'], writes: ['write -P 9 3M 64k'] },
    { name: 'k.vmdk', create: ['-f', 'vmdk'] },
  ]);
});
after(() => {
  builder.remove();
  twins.remove();
});

const QEMU_ERROR = "qemu-img: Could not change the backing file to 'a.qcow2': Operation not supported\n";
const INSTAR_ERROR = 'qemu-img: instar copies data in a safe rebase of qcow2 and qed images only (this is vmdk); use -u to change only the backing file name; nothing was written\n';

for (const version of VERSIONS) {
  test(`safe rebase copying into a vmdk: qemu-img ${version} writes then fails, instar refuses unwritten`, () => {
    const r = twins.run(version, files, ['rebase', '-b', 'a.qcow2', '-F', 'qcow2', 'k.vmdk'], { sandboxed: version === '10.0' });
    // For the record: qemu's status, message, and an image it has changed.
    assert.equal(r.qemu.status, 1);
    assert.equal(r.qemu.stderr, QEMU_ERROR);
    assert.ok(!readFileSync(join(r.qemuDir, 'k.vmdk')).equals(files['k.vmdk']), 'qemu-img changed the vmdk');
    // instar: the same status, its own reason, nothing written anywhere.
    assert.equal(r.instar.status, 1);
    assert.equal(r.instar.stderr, INSTAR_ERROR);
    assert.equal(r.instar.stdout, '');
    for (const name of Object.keys(files)) assert.ok(readFileSync(join(r.instarDir, name)).equals(files[name]), `instar left ${name} as it was`);
  });
}
