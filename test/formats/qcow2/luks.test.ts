// The LUKS header inside an encrypted qcow2: damaged fields must be refused with the message each
// oracle prints for the same file (qemu parses the header even for `info`, without a key).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { damagedImageMismatches, qemu, tempDir } from './helpers.ts';

type Patch = (image: Buffer, luks: number) => void;
const text = (s: string, at: number, size: number): Patch => (b, l) => {
  b.fill(0, l + at, l + at + size);
  b.write(s, l + at, 'latin1');
};
const slot = (i: number, field: number, v: number): Patch => (b, l) => b.writeUInt32BE(v, l + 208 + i * 48 + field);

const cases: [string, Patch][] = [
  ['bad magic', (b, l) => (b[l] = 0x4d)],
  ['version 2', (b, l) => b.writeUInt16BE(2, l + 6)],
  ['cipher name without NUL', (b, l) => b.fill(0x41, l + 8, l + 40)],
  ['hash spec without NUL', (b, l) => b.fill(0x41, l + 72, l + 104)],
  ['cipher mode without a dash', text('xts', 40, 32)],
  ['unknown cipher mode', text('foo-plain64', 40, 32)],
  ['unknown IV generator', text('xts-bogus', 40, 32)],
  ['unknown IV hash', text('cbc-essiv:sha999', 40, 32)],
  ['unknown hash', text('sha999', 72, 32)],
  ['unknown cipher', text('blowfish', 8, 32)],
  ['essiv with a hash no AES key fits', text('xts-essiv:sha1', 40, 32)],
  ['payload inside the header', (b, l) => b.writeUInt32BE(1, l + 104)],
  ['zero master key iterations', (b, l) => b.writeUInt32BE(0, l + 164)],
  ['slot stripes', slot(0, 44, 3999)],
  ['slot state', slot(3, 0, 5)],
  ['active slot with zero iterations', slot(0, 4, 0)],
  ['slot inside the LUKS header', slot(2, 40, 1)],
  ['slot past the payload', slot(7, 40, 0x7fffff00)],
  ['overlapping slots', slot(1, 40, 8)],
  ['odd uuid and a disabled slot', (b, l) => { b.write('not-a-uuid', l + 168, 'latin1'); b.fill(0, l + 178, l + 208); }],
];

test('LUKS header damage: same refusal (or same info) as both oracles', (t) => {
  const dir = tempDir(t);
  const pristine = join(dir, 'pristine.qcow2');
  qemu('10.0', [
    'create', '-q', '-f', 'qcow2', '--object', 'secret,id=s,data=pw',
    '-o', 'encrypt.format=luks,encrypt.key-secret=s,encrypt.iter-time=10', pristine, '4M',
  ]);
  const original = readFileSync(pristine);
  const luksAt = original.indexOf(Buffer.from('LUKS\xba\xbe', 'latin1'));
  assert.ok(luksAt > 0);
  assert.deepEqual(damagedImageMismatches(dir, original, cases, luksAt), []);
});
