// convert -B with a source that has no backing file of its own: qemu's block layer calls what such
// a source leaves unallocated zeros, so qemu-img writes it as zero clusters over the target's
// backing file (not left to show the backing file through), and cuts every run at the end of the
// target's backing file (past it nothing is written). Byte-identical to both oracles.
import { after, before, describe, test } from 'node:test';
import { qemu, sameAsOracles, scratch } from './harness.ts';
import { VERSIONS } from '../helpers/oracles.ts';

const work = scratch();
const dir = work.dir;

before(() => {
  qemu(['create', '-f', 'qcow2', 'blank.qcow2', '3M'], dir);
  qemu(['create', '-f', 'qcow2', 'src.qcow2', '4M'], dir);
  qemu(['-c', 'write -P 1 0 64k', '-c', 'write -z 1M 64k', '-c', 'write -P 2 3M 4k', 'src.qcow2'], dir, '10.0', 'qemu-io');
  // vpc: a CHS-rounded virtual size past the backing file's end, a 2 MiB block partly written.
  qemu(['convert', '-f', 'qcow2', '-O', 'vpc', 'src.qcow2', 'src.vhd'], dir);
});
after(() => work.cleanup());

describe('-B over a source without a backing file', () => {
  const cases: string[][] = [
    ['-f', 'qcow2', '../src.qcow2'],
    ['-f', 'qcow2', '-o', 'compat=0.10', '../src.qcow2'],
    ['-f', 'qcow2', '-o', 'cluster_size=4k', '-S', '0', '../src.qcow2'],
    ['-f', 'vpc', '../src.vhd'],
  ];
  for (const [i, args] of cases.entries()) {
    test(args.join(' '), () => {
      sameAsOracles(dir, ['convert', '-O', 'qcow2', '-B', '../blank.qcow2', '-F', 'qcow2', ...args, 'out.qcow2'], {
        label: `nb${i}`,
        profiles: [VERSIONS[i % 2]],
        instarOptions: [`--allow-path=${dir}`],
      });
    });
  }
});
