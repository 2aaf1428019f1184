// `info` in instar's default mode (the sandboxed guest), whatever INSTAR_TEST_SANDBOX says: a few
// images that exercise every way files reach the guest (top image, backing chain, extents).
import { after, before, test } from 'node:test';
import { ImageDir, assertSameOutput } from './harness.ts';

const images = new ImageDir('info-sandboxed');

before(() => {
  images.img('create', '-f', 'qcow2', 'base.qcow2', '16M');
  images.img('snapshot', '-c', 'snap', 'base.qcow2');
  images.img('create', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'top.qcow2');
  images.img('create', '-f', 'vmdk', '-o', 'subformat=twoGbMaxExtentSparse', 'split.vmdk', '3G');
});

after(() => images.remove());

for (const args of [['info', 'top.qcow2'], ['info', '--backing-chain', '--output=json', 'top.qcow2'], ['info', 'split.vmdk'], ['info', 'nosuch.qcow2']]) {
  test(`sandboxed: ${args.join(' ')}`, async () => await assertSameOutput(images.dir, args, { sandboxed: true }));
}
