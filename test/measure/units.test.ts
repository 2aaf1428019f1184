// measure's pure parts: the host's -O table agrees with the drivers' capabilities, the qcow2
// arithmetic refuses what would wrap instead of printing a wrong number, LUKS keys qemu aborts on
// are refused, -o syntax; and a disk too large for instar's readers fails in one clear line.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { drivers } from '../../src/formats/registry.ts';
import { MEASURERS } from '../../src/formats/measurers.ts';
import { qcow2Measure } from '../../src/formats/qcow2/measure.ts';
import { luksMeasure } from '../../src/formats/luks/measure.ts';
import { rawMeasure } from '../../src/formats/raw/measure.ts';
import { ImageError, type MeasureEnvironment, type MeasureInput } from '../../src/formats/types.ts';
import { isValidOptionList, optionItems, parseCreateOptions, OptionListError } from '../../src/host/commands/measure-options.ts';
import { ImageDir } from '../differential/harness.ts';
import { runInstar } from '../helpers/oracles.ts';

const ENV: MeasureEnvironment = { qemu: { major: 10, minor: 0 }, secretIds: new Set(['s0']) };

function input(virtualSize: bigint, dataBytes: (cs: number) => bigint = () => 0n): MeasureInput {
  return { virtualSize, dataBytes };
}

test('the host -O table holds exactly the drivers that have a measure capability, the same objects', () => {
  const withMeasure = drivers.filter((d) => d.measure !== undefined);
  assert.deepEqual(withMeasure.map((d) => d.name).sort(), Object.keys(MEASURERS).sort());
  for (const d of withMeasure) assert.equal(MEASURERS[d.name], d.measure, d.name);
});

test('qcow2: a disk whose rounded size passes int64 is refused, never printed wrapped', () => {
  const near = 2n ** 63n - 1n;
  assert.throws(() => qcow2Measure.measure(new Map(), input(near), ENV), (e) => e instanceof ImageError && /too large/.test(e.message));
  // Below the limit, the numbers are exact (qemu's own for 2^62 with 2 MiB clusters).
  const r = qcow2Measure.measure(new Map([['cluster_size', String(2 * 1024 * 1024)]]), input(2n ** 61n), ENV);
  assert.equal(r.fullyAllocated, 2305854004388691968n);
});

test('qcow2: required counts the data clusters the input reports, bitmaps only for v3 targets', () => {
  const data = input(100n * 1024n * 1024n, (cs) => BigInt(cs) * 3n);
  const v3 = qcow2Measure.measure(new Map(), { ...data, bitmaps: [{ nameBytes: 2, granularity: 65536 }] }, ENV);
  assert.equal(v3.required - qcow2Measure.measure(new Map(), data, ENV).required, 0n);
  assert.equal(v3.bitmaps, 3n * 65536n);
  const v2 = qcow2Measure.measure(new Map([['compat', '0.10']]), { ...data, bitmaps: [] }, ENV);
  assert.equal(v2.bitmaps, undefined);
  const failing: MeasureInput = { ...data, dataBytes: () => { throw new ImageError('Unable to get block status: Input/output error'); } };
  assert.throws(() => qcow2Measure.measure(new Map(), failing, ENV), /Unable to get block status: Input\/output error/);
  // A new backing file: every cluster counts, so the walk is not asked (its failure does not matter).
  const backed = qcow2Measure.measure(new Map([['backing_file', 'b']]), failing, ENV);
  assert.equal(backed.required, backed.fullyAllocated);
});

test('raw: --size rounds up to a sector in uint64; an input keeps its exact length', () => {
  assert.equal(rawMeasure.measure(new Map([['size', '1']]), undefined, ENV).required, 512n);
  assert.equal(rawMeasure.measure(new Map([['size', String(2n ** 64n - 1n)]]), undefined, ENV).required, 0n);
  assert.equal(rawMeasure.measure(new Map(), input(1000001n), ENV).required, 1000001n);
  assert.throws(() => rawMeasure.measure(new Map(), { ...input(0n), sizeError: 'File too large' }, ENV), /Unable to get image size: File too large/);
});

test('luks: a key qemu-img aborts on (not whole 16-byte blocks) is refused with a clear message', () => {
  const opts = new Map([['key-secret', 's0'], ['cipher-alg', 'aes-192'], ['cipher-mode', 'cbc']]);
  assert.throws(() => luksMeasure.measure(opts, undefined, ENV), (e) => e instanceof ImageError && /aborts/.test(e.message));
  assert.equal(luksMeasure.measure(new Map([['key-secret', 's0']]), undefined, ENV).required, 2068480n);
});

test('-o syntax: option lists, flags, escaped commas, typed values', () => {
  assert.equal(isValidOptionList(''), false);
  assert.equal(isValidOptionList(',a'), false);
  assert.equal(isValidOptionList('a=1,'), false);
  assert.equal(isValidOptionList('a=1,,'), true);
  assert.deepEqual(optionItems('a=1,,2,flag,noflag,b='), [['a', '1,2'], ['flag', 'on'], ['flag', 'off'], ['b', '']]);
  const table = { n: 'number', s: 'size', b: 'bool', t: 'string' } as const;
  assert.deepEqual([...parseCreateOptions('n=0x10,s=1.5k,b=yes,t=x,n=-1', table, true)], [['s', '1536'], ['b', 'on'], ['t', 'x'], ['n', String(2n ** 64n - 1n)]]);
  assert.throws(() => parseCreateOptions('s=-1', table, true), (e) => e instanceof OptionListError && /out of range/.test(e.message));
  assert.throws(() => parseCreateOptions('s=-1', table, false), (e) => e instanceof OptionListError && /non-negative/.test(e.message));
  assert.throws(() => parseCreateOptions('n=99999999999999999999', table, true), /too large/);
  assert.throws(() => parseCreateOptions('x=1', table, true), /Invalid parameter 'x'/);
});

const images = new ImageDir('measure-hostile');
before(() => {
  writeFileSync(images.path('flat.bin'), '');
  // 2^45 sectors = 2^54 bytes: qemu would measure it; instar's readers stop at 2^53 and say so.
  writeFileSync(images.path('big.vmdk'),
    '# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\n\nRW 35184372088832 FLAT "flat.bin" 0\n\nddb.virtualHWVersion = "4"\n');
});
after(() => images.remove());

test('a disk too large for instar to count fails in one clear line, sandboxed and in-process, no number printed', () => {
  for (const sandbox of [[], ['--sandbox=none']]) {
    for (const target of ['raw', 'qcow2']) {
      const r = runInstar(['measure', '-O', target, 'big.vmdk', ...sandbox], { cwd: images.dir });
      assert.equal(r.status, 1);
      assert.equal(r.stdout, '');
      assert.match(r.stderr, /^qemu-img: Could not open 'big\.vmdk': [^\n]+\n$/);
    }
  }
});
