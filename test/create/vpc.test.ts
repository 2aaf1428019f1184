// `create -f vpc` against both oracles: messages and exit statuses byte for byte, and the file equal
// to qemu's once the footer's random UUID, its timestamp and the checksum over them are masked;
// the checksum itself must be right, and qemu-img reads instar's file as it reads its own.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { ImageDir } from '../differential/harness.ts';
import { runQemu, VERSIONS } from '../helpers/oracles.ts';
import { compareSides, pool, runSide, type SideResult } from './harness.ts';
import { maskVhd } from '../writers/vpc-vmdk-harness.ts';

const template = new ImageDir('create-vpc');
before(() => template.mkdir('sub'));
after(() => template.remove());

const maskFiles = (side: SideResult, label: string): SideResult => ({
  ...side, files: new Map([...side.files].map(([name, bytes]) => [name, maskVhd(bytes, `${label} ${name}`)])),
});

const OPTIONS = ['', 'subformat=dynamic', 'subformat=fixed', 'force_size=on', 'subformat=fixed,force_size=on', 'subformat=foo', 'force_size=maybe'];
const SIZES = ['0', '1000', '1M', '10M', '200G', '2040G', '2041G'];

test('create -f vpc: messages and (masked) files match qemu-img 7.2 and 10.0', async () => {
  // Fixed disks are as large as the disk and read back whole: small ones only.
  const cases = OPTIONS.flatMap((o) => SIZES.filter((s) => !o.includes('fixed') || /^(0|1000|1M)$/.test(s)).map((size) => [o, size]));
  const tasks = cases.map(([o, size], n) => async () => {
    const version = VERSIONS[n % VERSIONS.length];
    const args = ['create', '-f', 'vpc', ...(o === '' ? [] : ['-o', o]), 'f.vhd', size];
    const label = `${version} ${args.join(' ')}`;
    const [expected, actual] = await Promise.all([runSide('qemu', version, template.dir, args), runSide('instar', version, template.dir, args)]);
    // qemu leaves an empty file behind when the driver fails; instar leaves none.
    if (expected.status !== 0) expected.files.delete('f.vhd');
    return compareSides(label, maskFiles(expected, label), maskFiles(actual, label));
  });
  const problems = (await pool(tasks)).flat();
  if (problems.length > 0) throw new Error(problems.join('\n'));
});

test('create -f vpc: qemu-img reads instar\'s file as its own; every create draws a new UUID', async () => {
  for (const [name, opts] of [['d.vhd', 'subformat=dynamic'], ['s.vhd', 'subformat=fixed']]) {
    const mine = await runSide('instar', '10.0', template.dir, ['create', '-q', '-f', 'vpc', '-o', opts, `sub/${name}`, '5M'], true);
    assert.equal(mine.status, 0, mine.stderr);
    // Write instar's file into the template so the oracle can read it.
    const path = template.path(`sub/${name}`);
    writeFileSync(path, mine.files.get(`sub/${name}`)!);
    template.img('create', '-q', '-f', 'vpc', '-o', opts, `sub/q-${name}`, '5M');
    for (const version of VERSIONS) {
      const info = (f: string) => runQemu(version, ['info', '--output=json', '-f', 'vpc', f], { cwd: template.dir });
      const a = JSON.parse(info(`sub/${name}`).stdout);
      const b = JSON.parse(info(`sub/q-${name}`).stdout);
      assert.equal(a['virtual-size'], b['virtual-size']);
      assert.deepEqual(a['format-specific'], b['format-specific']);
      const check = runQemu(version, ['check', '-f', 'vpc', `sub/${name}`], { cwd: template.dir });
      assert.equal(check.status, runQemu(version, ['check', '-f', 'vpc', `sub/q-${name}`], { cwd: template.dir }).status);
    }
  }
  const again = await runSide('instar', '10.0', template.dir, ['create', '-q', '-f', 'vpc', 'x.vhd', '5M']);
  const first = again.files.get('x.vhd')!;
  const second = (await runSide('instar', '10.0', template.dir, ['create', '-q', '-f', 'vpc', 'x.vhd', '5M'])).files.get('x.vhd')!;
  assert.notDeepEqual(first.subarray(68, 84), second.subarray(68, 84), 'two creates drew the same UUID');
  assert.equal(first[74] >> 4, 4, 'a version 4 UUID');
});
