// `create -f parallels` against both oracles: deterministic, so messages, exit statuses and files
// must be byte-identical; qemu-img reads and writes instar's image as its own.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { ImageDir } from '../differential/harness.ts';
import { runQemu, VERSIONS } from '../helpers/oracles.ts';
import { compareSides, pool, runSide } from './harness.ts';

const template = new ImageDir('create-parallels');
before(() => template.mkdir('sub'));
after(() => template.remove());

const OPTIONS = ['', 'cluster_size=1000', 'cluster_size=512', 'cluster_size=4M', 'cluster_size=0', 'cluster_size=8G', 'cluster_size=64k'];
const SIZES = ['0', '1000', '10M', '1T', '10T'];

test('create -f parallels: messages and files match qemu-img 7.2 and 10.0 byte for byte', async () => {
  const cases = OPTIONS.flatMap((o) => SIZES.map((size) => [o, size]));
  const tasks = cases.map(([o, size], n) => async () => {
    const version = VERSIONS[n % VERSIONS.length];
    const args = ['create', '-f', 'parallels', ...(o === '' ? [] : ['-o', o]), 'f.hdd', size];
    const [expected, actual] = await Promise.all([runSide('qemu', version, template.dir, args), runSide('instar', version, template.dir, args)]);
    // qemu leaves the file it had created behind when its driver fails; instar leaves none.
    if (expected.status !== 0) expected.files.delete('f.hdd');
    return compareSides(`${version} ${args.join(' ')}`, expected, actual);
  });
  const problems = (await pool(tasks)).flat();
  if (problems.length > 0) throw new Error(problems.join('\n'));
});

test('create -f parallels: qemu-img reads and writes instar\'s image (sandboxed create)', async () => {
  const mine = await runSide('instar', '10.0', template.dir, ['create', '-q', '-f', 'parallels', 'sub/i.hdd', '8M'], true);
  assert.equal(mine.status, 0, mine.stderr);
  writeFileSync(template.path('sub/i.hdd'), mine.files.get('sub/i.hdd')!);
  for (const version of VERSIONS) {
    assert.match(runQemu(version, ['check', 'sub/i.hdd'], { cwd: template.dir }).stdout, /^No errors were found on the image\.\n/);
    const io = runQemu(version, ['-c', 'write -P 3 1M 64k', '-c', 'read -P 3 1M 64k', 'sub/i.hdd'], { cwd: template.dir }, 'qemu-io');
    assert.equal(io.status, 0, io.stderr);
    assert.doesNotMatch(io.stdout + io.stderr, /Pattern verification failed|error/i);
  }
});
