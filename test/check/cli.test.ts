// `check`'s command line against both oracles: argument count, --output and -r values (checked
// in qemu's order, worded per version), -T, a missing file, -q. Repair (-r) has its own files:
// repair-cli.test.ts, repair-vhdx.test.ts.
import { after, before, test } from 'node:test';
import { ImageDir, assertSameOutput } from '../differential/harness.ts';

const images = new ImageDir('check-cli');

before(() => {
  images.img('create', '-q', '-f', 'qcow2', 'a.qcow2', '1M');
});
after(() => images.remove());

const LINES: string[][] = [
  ['check'],
  ['check', 'a.qcow2', 'b.qcow2'],
  ['check', '--output=xml', 'a.qcow2'],
  ['check', '--output=xml'],
  ['check', '-r', 'foo', 'a.qcow2'],
  ['check', '--output=xml', '-r', 'foo', 'a.qcow2'],
  ['check', '-r', 'foo', '--output=xml', 'a.qcow2'],
  ['check', '-r', 'leaks', '--output=xml'],
  ['check', '-T', 'bogus', 'a.qcow2'],
  ['check', '-T', 'bogus', '--output=xml', 'a.qcow2'],
  ['check', 'missing.qcow2'],
  ['check', '-f', 'vmdk', 'a.qcow2'],
  ['check', '-f', 'nosuchformat', 'a.qcow2'],
  ['check', '-q', 'a.qcow2'],
  ['check', '--output=human', '--output=json', 'a.qcow2'],
  // --object is created as its option comes, before the file name and --output checks.
  ['check', '--object', 'foo'],
  ['check', 'missing.qcow2', '--object', 'foo'],
  ['check', '--object', 'foo', '--output=xml', 'a.qcow2'],
  ['check', '--output=xml', '--object', 'foo', 'a.qcow2'],
  ['check', '-r', 'bad', '--object', 'foo', 'a.qcow2'],
  ['check', '-T', 'bogus', '--object', 'foo', 'a.qcow2'],
  ['check', '--object', 'secret,id=s0,file=/nonexistent', 'missing.qcow2'],
  ['check', '--object', 'secret,id=s0,data=x', '--object', 'secret,id=s0,data=y', 'a.qcow2'],
];

for (const args of LINES) {
  test(`qemu-img ${args.join(' ')}`, async () => {
    await assertSameOutput(images.dir, args);
  });
}
