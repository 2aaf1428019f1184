// `create -f vdi` against both oracles: messages and exit statuses byte for byte, the file equal to
// qemu's once the two random UUIDs are masked, and qemu-img reading instar's image as its own.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { ImageDir } from '../differential/harness.ts';
import { runQemu, VERSIONS } from '../helpers/oracles.ts';
import { compareSides, pool, runSide, type SideResult } from './harness.ts';

const template = new ImageDir('create-vdi');
before(() => template.mkdir('sub'));
after(() => template.remove());

/** The image and last-snapshot UUIDs (0x188..0x1a8) zeroed. */
const masked = (side: SideResult): SideResult => ({
  ...side,
  files: new Map([...side.files].map(([name, bytes]) => [name, bytes.length >= 512 ? Buffer.concat([bytes.subarray(0, 0x188), Buffer.alloc(32), bytes.subarray(0x1a8)]) : bytes])),
});

/** The arguments after `create -f vdi`. */
const CASES = [
  ...['0', '1000', '1M', '10M', '3000M', '4T', '1P', '562949919866880'].map((size) => ['f.vdi', size]),
  ...['0', '1000', '3M'].map((size) => ['-o', 'static=on', 'f.vdi', size]),
  ['-o', 'static=maybe', 'f.vdi', '1M'], ['-o', 'help'], ['-o', 'help', 'f.vdi'],
];

test('create -f vdi: messages and (masked) files match qemu-img 7.2 and 10.0', async () => {
  const tasks = CASES.map((rest, n) => async () => {
    const version = VERSIONS[n % VERSIONS.length];
    const args = ['create', '-f', 'vdi', ...rest];
    const [expected, actual] = await Promise.all([runSide('qemu', version, template.dir, args), runSide('instar', version, template.dir, args)]);
    // qemu leaves the file it had created behind when its driver fails; instar leaves none.
    if (expected.status !== 0) expected.files.delete('f.vdi');
    return compareSides(`${version} ${args.join(' ')}`, masked(expected), masked(actual));
  });
  const problems = (await pool(tasks)).flat();
  if (problems.length > 0) throw new Error(problems.join('\n'));
});

test('create -f vdi: qemu-img reads and writes instar\'s image as its own (sandboxed create)', async () => {
  for (const opts of ['static=off', 'static=on']) {
    const mine = await runSide('instar', '10.0', template.dir, ['create', '-q', '-f', 'vdi', '-o', opts, 'sub/i.vdi', '4M'], true);
    assert.equal(mine.status, 0, mine.stderr);
    writeFileSync(template.path('sub/i.vdi'), mine.files.get('sub/i.vdi')!);
    for (const version of VERSIONS) {
      assert.equal(runQemu(version, ['check', 'sub/i.vdi'], { cwd: template.dir }).stdout, 'No errors were found on the image.\n');
      const io = runQemu(version, ['-c', 'write -P 9 1M 64k', '-c', 'read -P 9 1M 64k', 'sub/i.vdi'], { cwd: template.dir }, 'qemu-io');
      assert.equal(io.status, 0, io.stderr);
      assert.doesNotMatch(io.stdout + io.stderr, /Pattern verification failed|error/i);
    }
  }
});
