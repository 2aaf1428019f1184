// `create -f vhdx` against both oracles: messages and exit statuses byte for byte, and the file
// equal to qemu's once the random parts are masked (both headers' checksum, sequence number and
// GUIDs; the page 83 GUID); the checksums must be right, and qemu-img reads instar's file.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { ImageDir } from '../differential/harness.ts';
import { runQemu, VERSIONS } from '../helpers/oracles.ts';
import { compareSides, pool, runSide, type SideResult } from './harness.ts';
import { checksumValid } from '../../src/formats/vhdx/crc32c.ts';

const template = new ImageDir('create-vhdx');
before(() => template.mkdir('sub'));
after(() => template.remove());

const KiB = 1024;

/** The random fields zeroed, after checking every checksum over them. */
function masked(file: Buffer, label: string): Buffer {
  if (file.length < 320 * KiB || file.toString('latin1', 0, 8) !== 'vhdxfile') return file;
  const out = Buffer.from(file);
  for (const at of [64 * KiB, 128 * KiB]) {
    assert.ok(checksumValid(out.subarray(at, at + 4 * KiB), 4), `${label}: header checksum at ${at}`);
    out.fill(0, at + 4, at + 48);
  }
  for (const at of [192 * KiB, 256 * KiB]) assert.ok(checksumValid(out.subarray(at, at + 64 * KiB), 4), `${label}: region table checksum`);
  const metadata = Number(out.readBigUInt64LE(192 * KiB + 64));
  out.fill(0, metadata + 64 * KiB + 16, metadata + 64 * KiB + 32);
  return out;
}

const maskFiles = (side: SideResult, label: string): SideResult => ({
  ...side, files: new Map([...side.files].map(([name, bytes]) => [name, masked(bytes, `${label} ${name}`)])),
});

const OPTIONS = ['', 'subformat=fixed', 'block_state_zero=off', 'subformat=fixed,block_state_zero=off', 'block_size=1M,log_size=3M',
  'log_size=1000', 'block_size=512M', 'block_size=3M', 'subformat=foo', 'log_size=5G', 'block_size=0'];
const SIZES = ['0', '1000', '10M', '3G', '65T'];
/**
 * Files are read back whole: no fixed disk beyond 10M, and an empty disk only once (its BAT is
 * the largest: qemu counts the entries of 0 blocks in uint32, 2 GiB of BAT with 256M blocks).
 */
const sizesFor = (o: string) => SIZES.filter((s) => (!o.includes('fixed') || /^(0|1000|10M)$/.test(s)) && (s !== '0' || o === ''));

test('create -f vhdx: messages and (masked) files match qemu-img 7.2 and 10.0', async () => {
  const cases = OPTIONS.flatMap((o) => sizesFor(o).map((size) => [o, size]));
  const tasks = cases.map(([o, size], n) => async () => {
    const version = VERSIONS[n % VERSIONS.length];
    const args = ['create', '-f', 'vhdx', ...(o === '' ? [] : ['-o', o]), 'f.vhdx', size];
    const label = `${version} ${args.join(' ')}`;
    const [expected, actual] = await Promise.all([runSide('qemu', version, template.dir, args), runSide('instar', version, template.dir, args)]);
    // qemu leaves the file it had created behind when its driver fails; instar leaves none.
    if (expected.status !== 0) expected.files.delete('f.vhdx');
    return compareSides(label, maskFiles(expected, label), maskFiles(actual, label));
  });
  const problems = (await pool(tasks)).flat();
  if (problems.length > 0) throw new Error(problems.join('\n'));
});

test('create -f vhdx: qemu-img reads and writes instar\'s file as its own (sandboxed create)', async () => {
  for (const opts of ['subformat=dynamic', 'subformat=fixed,block_state_zero=off']) {
    const mine = await runSide('instar', '10.0', template.dir, ['create', '-q', '-f', 'vhdx', '-o', opts, 'sub/i.vhdx', '8M'], true);
    assert.equal(mine.status, 0, mine.stderr);
    writeFileSync(template.path('sub/i.vhdx'), mine.files.get('sub/i.vhdx')!);
    for (const version of VERSIONS) {
      assert.equal(runQemu(version, ['check', 'sub/i.vhdx'], { cwd: template.dir }).stdout, 'No errors were found on the image.\n');
      const io = runQemu(version, ['-c', 'write -P 7 1M 64k', '-c', 'read -P 7 1M 64k', 'sub/i.vhdx'], { cwd: template.dir }, 'qemu-io');
      assert.equal(io.status, 0, io.stderr);
      assert.doesNotMatch(io.stdout + io.stderr, /Pattern verification failed|error/i);
    }
  }
});
