// convert -p from a sparse VMDK: qemu's vmdk driver answers block status one grain (64 KiB) at a
// time, so its runs, its 2 MiB chunks and its progress lines restart at every grain, where
// instar's extent() merges the grains. Lines, files and statuses against both oracles.
import { after, before, test } from 'node:test';
import { qemu, sameAsOracles, scratch } from '../convert-image/harness.ts';

const work = scratch();
before(() => {
  qemu(['create', '-q', '-f', 'qcow2', 'src.qcow2', '6M'], work.dir);
  qemu(['-c', 'write -P 0x11 0 1M', '-c', 'write -P 0x22 3M 2M', 'src.qcow2'], work.dir, '10.0', 'qemu-io');
  qemu(['convert', '-O', 'vmdk', 'src.qcow2', 'sparse.vmdk'], work.dir);
  qemu(['convert', '-O', 'vmdk', '-o', 'subformat=streamOptimized', 'src.qcow2', 'stream.vmdk'], work.dir);
});
after(() => work.cleanup());

test('-p from monolithicSparse and streamOptimized VMDKs: a progress step per grain', () => {
  sameAsOracles(work.dir, ['convert', '-p', '-O', 'raw', '../sparse.vmdk', 't.raw'], { label: 'sparse' });
  sameAsOracles(work.dir, ['convert', '-p', '-O', 'qcow2', '../stream.vmdk', 't.qcow2'], { label: 'stream', profiles: ['10.0'] });
});
