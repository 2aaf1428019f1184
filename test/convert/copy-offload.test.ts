// convert -C (copy offloading): qemu copies the block-status data runs with copy_range, so zeros
// written as data stay allocated in the target (without -C its zero detection leaves them out);
// where its drivers have no copy_range (vmdk sources, compressed clusters, other targets) it
// copies as without -C. Compared with both oracles: messages, the target's bytes and its map.
import { test, before, after } from 'node:test';
import { truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { sameTargetAsOracles } from './target-sides.ts';
import { qemu, qemuIo, tempDir } from './helpers.ts';

const MiB = 1024 * 1024;
let dir: string;
let cleanup: () => void;
before(() => {
  ({ dir, cleanup } = tempDir());
  // Zeros written as data (what -C keeps and zero detection drops), data, a zero cluster.
  qemu(['create', '-q', '-f', 'qcow2', join(dir, 'plain.qcow2'), '4M']);
  qemuIo(join(dir, 'plain.qcow2'), ['write -P 0 0 1M', 'write -P 5 1M 64k', 'write -z 2M 64k']);
  qemu(['convert', '-c', '-O', 'qcow2', join(dir, 'plain.qcow2'), join(dir, 'compressed.qcow2')]);
  qemu(['create', '-q', '-f', 'qcow2', '-b', 'plain.qcow2', '-F', 'qcow2', join(dir, 'over.qcow2')]);
  qemuIo(join(dir, 'over.qcow2'), ['write -P 0 3M 64k']);
  qemu(['convert', '-O', 'vmdk', join(dir, 'plain.qcow2'), join(dir, 'plain.vmdk')]);
  writeFileSync(join(dir, 'disk.raw'), '');
  truncateSync(join(dir, 'disk.raw'), 3 * MiB);
  qemuIo(join(dir, 'disk.raw'), ['write -P 0 64k 512k', 'write -P 7 1M 4k'], 'raw');
});
after(() => cleanup());

const CASES: string[][] = [
  ['-f', 'raw', '-O', 'raw', 'disk.raw'],
  ['-f', 'raw', '-O', 'qcow2', 'disk.raw'],
  ['-O', 'raw', 'plain.qcow2'],
  ['-O', 'qcow2', '-o', 'cluster_size=4096', 'plain.qcow2'],
  ['-O', 'raw', 'compressed.qcow2'],
  ['-O', 'qcow2', 'over.qcow2'],
  ['-O', 'raw', '-p', 'over.qcow2'],
  ['-O', 'raw', 'plain.vmdk'],
  ['-f', 'raw', '-O', 'qed', 'disk.raw'],
  ['-O', 'raw', '-c', 'plain.qcow2'],
  ['-O', 'raw', '-S', '4k', 'plain.qcow2'],
];

for (const args of CASES) {
  test(`convert -C ${args.join(' ')}: as qemu-img 7.2 and 10.0`, () => sameTargetAsOracles(dir, ['-C', ...args], (a) => /\.(raw|qcow2|vmdk)$/.test(a)));
}
