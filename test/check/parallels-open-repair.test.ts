// A parallels image that qemu's read-write open judges damaged: marked in use, or with a data_off
// qemu 8.2+ calls wrong (cluster_size=3000: qemu 10.0 rounds the BAT's end up to 8 sectors, not 6,
// and so calls its own create's data_off wrong; or a data_off spoiled by hand). qemu 10.0 repairs
// it at every such open, printing its check's lines, before the command; qemu 7.2 refuses one
// marked in use and leaves data_off alone. Both cut a leaked tail off when they close the image.
// check -r, resize, snapshot, amend and convert -n against both oracles: stdout, stderr, exit
// status and the file byte for byte.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { VERSIONS, runQemu } from '../helpers/oracles.ts';
import { assertSameRun, planPrefix } from './repair-harness.ts';
import { assertPrefixesSafe } from './repair-more-matrix.ts';
import { parallelsDriver } from '../../src/formats/parallels/driver.ts';
import { checkParallels } from '../../src/formats/parallels/check.ts';
import { repairParallels } from '../../src/formats/parallels/repair.ts';
import { RepairDirs } from './fast-dirs.ts';
// In the long tier its unsandboxed instar runs launch the built CLI as before (check/instar-sync.ts).
import { LONG } from '../helpers/long.ts';

const dirs = new RepairDirs();
const MiB = 1024 * 1024;
const INUSE = 0x746f6e59;
const images: Record<string, Buffer> = {};
const source = Buffer.alloc(MiB);

const withU32 = (b: Buffer, at: number, value: number) => {
  const copy = Buffer.from(b);
  copy.writeUInt32LE(value, at);
  return copy;
};

before(() => {
  const odd = join(dirs.root, 'odd.parallels');
  assert.equal(runQemu('7.2', ['create', '-q', '-f', 'parallels', '-o', 'cluster_size=3000', odd, '1M']).status, 0);
  images.odd = readFileSync(odd);
  const base = join(dirs.root, 'base.parallels');
  assert.equal(runQemu('7.2', ['create', '-q', '-f', 'parallels', base, '4M']).status, 0);
  assert.equal(runQemu('7.2', ['-f', 'parallels', '-c', 'write -P 0x11 0 1M', '-c', 'write -P 0x12 3M 1M', base], {}, 'qemu-io').status, 0);
  const bytes = readFileSync(base);
  images.unclean = withU32(bytes, 44, INUSE);
  // Below the BAT's end: qemu 10.0 sets it to the first cluster after the BAT.
  images['data_off 1'] = withU32(bytes, 48, 1);
  images['leaked tail'] = Buffer.concat([bytes, Buffer.alloc(100_000, 0x55)]);
  for (let i = 0; i < source.length; i += 4096) source.fill(i / 4096 + 1, i, i + 512);
});
after(() => dirs.remove());

test('check -r all|leaks on a parallels image with a data_off qemu 10.0 calls wrong: repaired as qemu repairs it', () => {
  for (const v of VERSIONS) {
    for (const name of ['odd', 'data_off 1']) {
      for (const mode of ['all', 'leaks']) {
        for (const json of [false, true]) {
          const args = ['check', '-r', mode, ...(json ? ['--output=json'] : []), 'x.parallels'];
          const r = dirs.run(v, 'x.parallels', images[name], args);
          const label = `${v} ${name} ${args.join(' ')}`;
          assertSameRun(r, label);
          assert.ok(r.instarFile.equals(r.qemuFile), `${label}: the files differ`);
        }
      }
    }
  }
  // The case the fix is about: 10.0 grows the file to the repaired data_off and rewrites it.
  const r = dirs.run('10.0', 'x.parallels', images.odd, ['check', '-r', 'all', 'x.parallels']);
  assert.equal(r.qemu.stderr, 'Repairing data_off field has incorrect value\n');
  assert.equal(r.instarFile.length, 4096);
  assert.equal(r.instarFile.readUInt32LE(48), 8);
});

const FAILING = [
  ['resize', 'x.parallels', '2M'],
  ['snapshot', '-c', 's', 'x.parallels'],
  ['amend', '-o', 'cluster_size=1024', 'x.parallels'],
];

test('resize, snapshot -c, amend on such parallels images: 10.0 repairs at open (its lines first), 7.2 refuses one in use; a leaked tail cut off', () => {
  for (const v of VERSIONS) {
    for (const name of ['odd', 'unclean', 'data_off 1', 'leaked tail']) {
      for (const [i, args] of FAILING.entries()) {
        // The guest only carries the result across: the short tier sends this case through it under
        // 10.0 (in-process under 7.2), the long tier under both.
        const r = dirs.run(v, 'x.parallels', images[name], args, { viaEnv: true, sandboxed: i === 0 && name === 'odd' && (LONG || v === '10.0') });
        const label = `${v} ${name} ${args.join(' ')}`;
        assertSameRun(r, label);
        assert.ok(r.instarFile.equals(r.qemuFile), `${label}: the files differ`);
        if (v === '10.0' && name !== 'leaked tail') assert.match(r.qemu.stderr, /^Repairing /, `${label}: qemu repairs at open`);
        if (name === 'leaked tail') assert.equal(r.instarFile.length, images[name].length - 100_000, `${label}: the tail cut off`);
      }
    }
  }
});

test('convert -n into such parallels images: repaired first under 10.0, refused by 7.2 when in use, a leaked tail cut off; the same bytes', () => {
  for (const v of VERSIONS) {
    for (const name of ['unclean', 'data_off 1', 'leaked tail']) {
      // qemu 7.2 writes into a data_off-1 image where instar refuses (its data area is not cluster-aligned).
      if (v === '7.2' && name === 'data_off 1') continue;
      const args = ['convert', '-n', '-f', 'raw', '-O', 'parallels', 'src.raw', 'x.parallels'];
      const r = dirs.run(v, 'x.parallels', images[name], args, { files: { 'src.raw': source }, sandboxed: name === 'unclean' && (LONG || v === '7.2') });
      const label = `${v} ${name} convert -n`;
      assertSameRun(r, label);
      assert.ok(r.instarFile.equals(r.qemuFile), `${label}: the files differ`);
    }
  }
});

test('convert -n into a cluster_size=3000 parallels image under 10.0: refused with nothing written (qemu writes its data where the repaired BAT does not point)', () => {
  const args = ['convert', '-n', '-f', 'raw', '-O', 'parallels', 'src.raw', 'x.parallels'];
  const r = dirs.run('10.0', 'x.parallels', images.odd, args, { files: { 'src.raw': source } });
  assert.equal(r.qemu.status, 0);
  assert.equal(runQemu('10.0', ['compare', '-f', 'raw', '-F', 'parallels', join(r.qemuPath, '..', 'src.raw'), r.qemuPath]).status, 1, 'qemu 10.0 corrupts it');
  assert.equal(r.instar.stderr, "qemu-img: instar cannot convert into this parallels image (its data does not start at a cluster boundary); nothing was written\n");
  assert.equal(r.instar.status, 1);
  assert.ok(r.instarFile.equals(images.odd), 'unchanged');
});

test('every prefix of the data_off repair leaves an image qemu-img 10.0 check reads, no more damaged', () => {
  const path = join(dirs.root, 'prefix.parallels');
  const bytes = images.odd;
  const total = assertPrefixesSafe('parallels data_off', path, bytes, (n) => planPrefix(path, bytes, n, parallelsDriver, checkParallels, repairParallels), undefined, '10.0');
  assert.equal(total, 2, 'the file grown, then data_off written');
});
