// ISO 9660 and UDF images: in default mode instar names them "iso" and reads them as raw (qemu's
// output with the format name changed); with --unsafe-quirks it says "raw", byte for byte as
// qemu-img does. Data read (convert -O raw) is the file itself in both modes, as in qemu.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { assertSameOutput, ImageDir } from '../../differential/harness.ts';
import { runInstar, runQemu, VERSIONS } from '../../helpers/oracles.ts';
import { iso9660, udf } from './build.ts';

const images = new ImageDir('iso');

const files: Record<string, Buffer> = {
  'cd.iso': iso9660(64),
  'hybrid.iso': iso9660(80, { mbr: true }),
  'dvd.img': udf(40),
  'udf3.bin': udf(40, 'NSR03'),
};

before(() => {
  for (const [name, bytes] of Object.entries(files)) writeFileSync(images.path(name), bytes);
  // A sparse tail: map reports it as a zero run, in both modes.
  writeFileSync(images.path('sparse.iso'), Buffer.concat([iso9660(20), Buffer.alloc(1024 * 1024)]));
});
after(() => images.remove());

const all = [...Object.keys(files), 'sparse.iso'];
const commands = (file: string): string[][] => [['info', file], ['info', '--output=json', file], ['map', file], ['map', '--output=json', file]];

for (const file of all) {
  for (const args of commands(file)) {
    test(`iso --unsafe-quirks ${args.join(' ')}: exactly qemu's`, async () => {
      await assertSameOutput(images.dir, args, { instarArgs: ['--unsafe-quirks'], sandboxed: file === 'cd.iso' });
    });
    test(`iso default ${args.join(' ')}: qemu's with format iso`, () => {
      for (const version of VERSIONS) {
        const want = runQemu(version, args, { cwd: images.dir, env: { TZ: 'UTC' } });
        const got = runInstar([...args, '--qemu-version', version, ...(file === 'dvd.img' ? [] : ['--sandbox=none'])], { cwd: images.dir, env: { TZ: 'UTC' } });
        const expected = want.stdout.replace('file format: raw\n', 'file format: iso\n').replace('"format": "raw"', '"format": "iso"');
        if (args[0] === 'info') assert.notEqual(expected, want.stdout, 'the format name was replaced');
        assert.equal(got.stdout, expected, `${version} stdout`);
        assert.equal(got.stderr, want.stderr, `${version} stderr`);
        assert.equal(got.status, want.status, `${version} status`);
      }
    });
  }
  test(`iso convert -O raw ${file}: the same bytes in both modes`, () => {
    for (const version of VERSIONS) {
      const q = runQemu(version, ['convert', '-O', 'raw', file, `q-${file}.raw`], { cwd: images.dir });
      assert.equal(q.status, 0, q.stderr);
      for (const mode of [[], ['--unsafe-quirks']]) {
        const r = runInstar(['convert', '-O', 'raw', file, `i-${file}.raw`, '--qemu-version', version, ...mode], { cwd: images.dir });
        assert.equal(r.status, 0, r.stderr);
        assert.ok(readFileSync(images.path(`i-${file}.raw`)).equals(readFileSync(images.path(`q-${file}.raw`))));
      }
    }
  });
}

test('iso: -f raw in default mode is exactly qemu-img', async () => {
  await assertSameOutput(images.dir, ['info', '-f', 'raw', 'cd.iso']);
  await assertSameOutput(images.dir, ['info', '--output=json', '-f', 'raw', 'dvd.img']);
});

test('iso: a CD001 past the recognition area, or a zeroed first descriptor, is not an ISO', () => {
  const notIso = Buffer.alloc(0x10000);
  notIso.write('CD001', 0x8001 + 20 * 2048 - 0x8000, 'latin1'); // far from the descriptors
  writeFileSync(images.path('not.iso'), notIso);
  const r = runInstar(['info', 'not.iso', '--sandbox=none'], { cwd: images.dir });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /Could not determine image format/);
});
