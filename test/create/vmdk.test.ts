// `create -f vmdk` (every subformat) against both oracles: messages and exit statuses byte for
// byte, every file (descriptor and extents) equal to qemu's but for the descriptor's random CID,
// and qemu-img reading instar's image as its own. A create that fails leaves no file behind.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { ImageDir } from '../differential/harness.ts';
import { runQemu, VERSIONS } from '../helpers/oracles.ts';
import { compareSides, pool, runSide, type SideResult } from './harness.ts';

const template = new ImageDir('create-vmdk');
before(() => {
  template.mkdir('sub');
  template.img('create', '-q', '-f', 'vmdk', 'base.vmdk', '5M');
  template.img('create', '-q', '-f', 'raw', 'base.raw', '1M');
});
after(() => template.remove());

/** The descriptor (a file of its own, or sectors 1..20 of a sparse extent) with its CID line replaced. */
function maskCid(file: Buffer): Buffer {
  if (file.toString('latin1', 0, 4) !== 'KDMV') return Buffer.from(file.toString('latin1').replace(/^CID=[0-9a-f]{1,8}$/m, 'CID=?'), 'latin1');
  const head = file.subarray(0, 512);
  const descriptor = file.subarray(512, 21 * 512).toString('latin1').replace(/\0+$/, '').replace(/^CID=[0-9a-f]{1,8}$/m, 'CID=?');
  return Buffer.concat([head, Buffer.from(`${descriptor}|${file.length}|`, 'latin1'), file.subarray(21 * 512)]);
}

const masked = (side: SideResult): SideResult => ({ ...side, files: new Map([...side.files].map(([n, b]) => [n, maskCid(b)])) });

const OPTIONS = ['', 'subformat=streamOptimized', 'zeroed_grain=on', 'adapter_type=lsilogic', 'adapter_type=buslogic,compat6=on',
  'hwversion=7,toolsversion=12', 'adapter_type=legacyESX,subformat=streamOptimized', 'hwversion=undefined', 'adapter_type=foo',
  'subformat=foo', 'compat6=on,hwversion=7', 'subformat=monolithicFlat,zeroed_grain=on', 'subformat=monolithicFlat',
  'subformat=twoGbMaxExtentFlat,adapter_type=lsilogic', 'subformat=twoGbMaxExtentSparse', 'subformat=twoGbMaxExtentSparse,zeroed_grain=on'];
const SIZES = ['0', '1000', '10M', '100G'];
/** Flat extents are as large as the disk and read back whole: small disks only (split sparse ones are small). */
const sizesFor = (o: string) => (o.includes('Flat') ? SIZES.slice(0, 3) : o.includes('twoGb') ? [...SIZES.slice(0, 3), '5G'] : SIZES);

/** Backing files: the child records the parent's CID (compared: only the child's own CID is masked). */
const BACKING_CASES = [
  ['-b', 'base.vmdk', '-F', 'vmdk'], ['-b', 'base.vmdk', '-F', 'vmdk', '-o', 'subformat=twoGbMaxExtentSparse'], ['-b', 'base.vmdk'],
  ['-b', 'base.vmdk', '-F', 'vmdk', '-o', 'subformat=monolithicFlat'], ['-b', 'base.vmdk', '-F', 'vmdk', '-o', 'adapter_type=foo'],
  ['-b', 'base.raw', '-F', 'raw'], ['-u', '-b', 'nope', '-F', 'vmdk', '1M'], ['-u', '-b', 'base.raw', '-F', 'vmdk', '1M'],
  ['-u', '-b', 'base.vmdk', '-F', 'vmdk', '-o', 'subformat=streamOptimized', '3M'],
];

test('create -f vmdk: messages and files (but the CID) match qemu-img 7.2 and 10.0', async () => {
  const cases = [
    ...OPTIONS.flatMap((o) => sizesFor(o).map((size) => [...(o === '' ? [] : ['-o', o]), 'f.vmdk', size])),
    ...BACKING_CASES.map((c) => [...c.filter((a) => !/^\d+M$/.test(a)), 'f.vmdk', ...c.filter((a) => /^\d+M$/.test(a))]),
  ];
  const tasks = cases.map((rest, n) => async () => {
    const version = VERSIONS[n % VERSIONS.length];
    const args = ['create', '-f', 'vmdk', ...rest];
    const [expected, actual] = await Promise.all([runSide('qemu', version, template.dir, args), runSide('instar', version, template.dir, args)]);
    // qemu leaves the file it had created behind when its driver fails; instar leaves none.
    if (expected.status !== 0) expected.files.delete('f.vmdk');
    return compareSides(`${version} ${args.join(' ')}`, masked(expected), masked(actual));
  });
  const problems = (await pool(tasks)).flat();
  if (problems.length > 0) throw new Error(problems.join('\n'));
});

test('create -f vmdk: qemu-img reads instar\'s file as its own; a failed create leaves nothing', async () => {
  for (const opts of ['subformat=monolithicSparse', 'subformat=streamOptimized']) {
    const mine = await runSide('instar', '10.0', template.dir, ['create', '-q', '-f', 'vmdk', '-o', opts, 'sub/i.vmdk', '64M'], true);
    assert.equal(mine.status, 0, mine.stderr);
    writeFileSync(template.path('sub/i.vmdk'), mine.files.get('sub/i.vmdk')!);
    template.img('create', '-q', '-f', 'vmdk', '-o', opts, 'sub/q.vmdk', '64M');
    for (const version of VERSIONS) {
      const info = (f: string) => JSON.parse(runQemu(version, ['info', '--output=json', f], { cwd: template.dir }).stdout);
      const a = info('sub/i.vmdk');
      const b = info('sub/q.vmdk');
      delete a['format-specific'].data.cid;
      delete b['format-specific'].data.cid;
      a['format-specific'].data.extents[0].filename = b['format-specific'].data.extents[0].filename;
      assert.deepEqual([a['virtual-size'], a['format-specific']], [b['virtual-size'], b['format-specific']]);
      assert.equal(runQemu(version, ['check', 'sub/i.vmdk'], { cwd: template.dir }).stdout, 'No errors were found on the image.\n');
    }
  }
  // qemu leaves the descriptor file behind when the driver cannot open the backing file; instar does not.
  const r = await runSide('instar', '10.0', template.dir, ['create', '-q', '-f', 'vmdk', '-u', '-o', 'subformat=twoGbMaxExtentSparse', '-b', 'nope', '-F', 'vmdk', 'r.vmdk', '3G']);
  assert.equal(r.status, 1);
  assert.equal(r.stderr, "qemu-img: r.vmdk: Could not open 'nope': No such file or directory\n");
  assert.deepEqual([...r.files.keys()].filter((n) => n.startsWith('r')), []);
});
