// `create -f qed` against both oracles: deterministic, so messages, exit statuses and files must be
// byte-identical, with and without a backing file (probed through the path policy, or -u).
import { after, before, test } from 'node:test';
import { ImageDir } from '../differential/harness.ts';
import { VERSIONS } from '../helpers/oracles.ts';
import { compareSides, pool, runSide } from './harness.ts';

const template = new ImageDir('create-qed');
before(() => {
  template.img('create', '-q', '-f', 'raw', 'b.raw', '1M');
  template.img('create', '-q', '-f', 'qed', 'b.qed', '3M');
});
after(() => template.remove());

/** Files are read back whole: a layout of 64M clusters (128 MiB) once only. */
const sizesFor = (o: string) => (o.includes('64M') ? ['10M'] : ['0', '1000', '10M', '64T', '65T']);

/** The arguments after `create -f qed`. */
const CASES = [
  ...['', 'cluster_size=4k', 'cluster_size=64M,table_size=1', 'table_size=16', 'table_size=1,cluster_size=1M', 'cluster_size=1000', 'table_size=3',
    'cluster_size=64M,table_size=16'].flatMap((o) => sizesFor(o).map((size) => [...(o === '' ? [] : ['-o', o]), 'f.qed', size])),
  ['-b', 'b.raw', '-F', 'raw', 'f.qed'], ['-b', 'b.qed', '-F', 'qed', 'f.qed'], ['-b', 'b.qed', 'f.qed'], ['-u', '-b', 'nope', '-F', 'qcow2', 'f.qed', '1M'],
  ['-b', 'nope', '-F', 'raw', 'f.qed'], ['-o', 'help'], ['-o', 'help', 'f.qed'],
];

test('create -f qed: messages and files match qemu-img 7.2 and 10.0 byte for byte', async () => {
  const tasks = CASES.map((rest, n) => async () => {
    const version = VERSIONS[n % VERSIONS.length];
    const args = ['create', '-f', 'qed', ...rest];
    const [expected, actual] = await Promise.all([runSide('qemu', version, template.dir, args), runSide('instar', version, template.dir, args)]);
    // qemu leaves the file it had created behind when its driver fails; instar leaves none.
    if (expected.status !== 0) expected.files.delete('f.qed');
    return compareSides(`${version} ${args.join(' ')}`, expected, actual);
  });
  const problems = (await pool(tasks)).flat();
  if (problems.length > 0) throw new Error(problems.join('\n'));
});
