// `create -f qcow` (version 1) against both oracles: deterministic, so messages, exit statuses and
// files must be byte-identical; encryption (qemu's deprecated AES) is refused and writes nothing.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { ImageDir } from '../differential/harness.ts';
import { VERSIONS } from '../helpers/oracles.ts';
import { compareSides, pool, runSide } from './harness.ts';

const template = new ImageDir('create-qcow');
before(() => template.img('create', '-q', '-f', 'qcow', 'b.qcow', '3M'));
after(() => template.remove());

/** The arguments after `create -f qcow`. */
const CASES = [
  ...['', 'backing_file=base,backing_fmt=raw', 'backing_file=fat:', 'backing_file=a/long/name/for/the/base.img', 'encryption=off']
    .flatMap((o) => ['0', '1000', '10M', '1T'].map((size) => ['-u', ...(o === '' ? [] : ['-o', o]), 'f.qcow', size])),
  ['-b', 'b.qcow', '-F', 'qcow', 'f.qcow'], ['-b', 'b.qcow', 'f.qcow'], ['-o', 'help'], ['-o', 'help', 'f.qcow'],
];

test('create -f qcow: messages and files match qemu-img 7.2 and 10.0 byte for byte', async () => {
  const tasks = CASES.map((rest, n) => async () => {
    const version = VERSIONS[n % VERSIONS.length];
    const args = ['create', '-f', 'qcow', ...rest];
    const [expected, actual] = await Promise.all([runSide('qemu', version, template.dir, args), runSide('instar', version, template.dir, args)]);
    // qemu leaves the file it had created behind when its driver fails; instar leaves none.
    if (expected.status !== 0) expected.files.delete('f.qcow');
    return compareSides(`${version} ${args.join(' ')}`, expected, actual);
  });
  const problems = (await pool(tasks)).flat();
  if (problems.length > 0) throw new Error(problems.join('\n'));
});

test('create -f qcow: encryption is refused in one line and leaves no file', async () => {
  for (const o of ['encryption=on', 'encrypt.format=aes,encrypt.key-secret=s']) {
    const r = await runSide('instar', '10.0', template.dir, ['create', '-q', '-f', 'qcow', '-o', o, 'e.qcow', '1M']);
    assert.equal(r.status, 1);
    assert.equal(r.stderr, 'qemu-img: e.qcow: instar does not create encrypted qcow images (encrypt.format, encryption); nothing was written\n');
    assert.equal(r.files.has('e.qcow'), false);
  }
});
