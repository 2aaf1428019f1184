// The qcow2 file `create` writes is byte-identical to qemu-img's (qcow2 create is deterministic):
// every option that changes the layout, over sizes from empty to past one L2 table and one
// refcount block, against both oracles (their files are the same; both are checked).
import { after, before, test } from 'node:test';
import { ImageDir } from '../differential/harness.ts';
import { VERSIONS } from '../helpers/oracles.ts';
import { compareSides, pool, runSide } from './harness.ts';
import { LONG } from '../helpers/long.ts';

const template = new ImageDir('create-qcow2');
before(() => template.mkdir('sub'));
after(() => template.remove());

const OPTIONS = [
  '', 'compat=0.10', 'compat=v2', 'cluster_size=512', 'cluster_size=4k', 'cluster_size=8k', 'cluster_size=2M', 'extended_l2=on',
  'extended_l2=on,cluster_size=16k', 'compression_type=zstd', 'lazy_refcounts=on', 'refcount_bits=1', 'refcount_bits=2', 'refcount_bits=4',
  'refcount_bits=8', 'refcount_bits=32', 'refcount_bits=64', 'refcount_bits=64,cluster_size=512', 'preallocation=metadata',
  'preallocation=metadata,extended_l2=on', 'preallocation=metadata,cluster_size=512', 'preallocation=metadata,cluster_size=4k,refcount_bits=64',
  'preallocation=metadata,cluster_size=2M', 'preallocation=off', 'preallocation=full', 'preallocation=falloc,cluster_size=512',
  'preallocation=full,extended_l2=on', 'preallocation=falloc,cluster_size=4k,refcount_bits=64', 'preallocation=full,refcount_bits=1,cluster_size=1k', 'data_file=d.raw', 'data_file=sub/d.raw,data_file_raw=on',
  'data_file=d.raw,preallocation=metadata', 'data_file=d.raw,preallocation=full', 'data_file=d.raw,preallocation=falloc,extended_l2=on',
  'data_file=d.raw,data_file_raw=on,extended_l2=on', 'data_file=d.raw,data_file_raw=on,cluster_size=512',
  'backing_file=b.img,backing_fmt=raw', 'compat=0.10,backing_file=some/where/b.img,backing_fmt=qcow2',
  'backing_file=b.img,backing_fmt=qcow2,preallocation=metadata,extended_l2=on', 'backing_file=b,,c.img,backing_fmt=vmdk,cluster_size=512',
  'lazy_refcounts=on,compression_type=zstd,extended_l2=on,refcount_bits=8,cluster_size=128k',
];
const SIZES = ['0', '1000', '204800', '3M', '3G'];
/** Files as large as the disk (preallocated, or a data file) are read back whole: small disks only. */
const sizesFor = (o: string) => (/preallocation=(metadata|full|falloc)|data_file/.test(o) ? SIZES.slice(0, 4) : SIZES);

test('create -f qcow2: the file is byte-identical to qemu-img 7.2 and 10.0', async () => {
  // The two releases write the same files; the cases alternate between them (time budget).
  // Short tier: each option at every other size, alternating by option (each size on half the
  // options: the layout arithmetic is one function of cluster size, table sizes and disk size); long tier: all.
  const cases = OPTIONS.flatMap((o, k) => sizesFor(o).filter((_, j) => LONG || (k + j) % 2 === 0).map((size) => [o, size]));
  const tasks = cases.map(([o, size], n) => async () => {
    const version = VERSIONS[n % VERSIONS.length];
    const args = ['create', '-f', 'qcow2', '-u', ...(o === '' ? [] : ['-o', o]), 'f.qcow2', size];
    const [expected, mine] = await Promise.all([runSide('qemu', version, template.dir, args), runSide('instar', version, template.dir, args)]);
    return compareSides(`${version} ${args.join(' ')}`, expected, mine);
  });
  const problems = (await pool(tasks)).flat();
  if (problems.length > 0) throw new Error(problems.join('\n'));
});
