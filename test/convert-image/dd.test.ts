// dd -O qcow2 against both oracles: qemu's dd writes every block (zeros too) into a new image of
// the copied length, so every cluster is allocated, in order; instar's file is byte-identical.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { qemu, sameAsOracles, scratch } from './harness.ts';
import { VERSIONS } from '../helpers/oracles.ts';
import { prng } from '../helpers/xorshift.ts';

const work = scratch();
const dir = work.dir;

before(() => {
  const next = prng(5);
  const buf = Buffer.alloc(3 * 1024 * 1024 + 1234);
  for (let i = 0; i + 4 <= 1024 * 1024; i += 4) buf.writeUInt32LE(next(), i);
  buf.fill(9, 2 * 1024 * 1024, 2 * 1024 * 1024 + 5000);
  writeFileSync(join(dir, 'in.raw'), buf);
  qemu(['convert', '-f', 'raw', '-O', 'qcow2', '-o', 'cluster_size=4k', 'in.raw', 'in.qcow2'], dir);
});
after(() => work.cleanup());

describe('dd -O qcow2: the file is byte-identical to qemu-img dd', () => {
  const cases: string[][] = [
    ['-f', 'raw', 'if=../in.raw'],
    ['-f', 'raw', 'if=../in.raw', 'bs=4k'],
    ['-f', 'raw', 'if=../in.raw', 'bs=1000', 'skip=7', 'count=300'],
    ['if=../in.qcow2', 'bs=3M'],
    ['-f', 'raw', 'if=../in.raw', 'count=0'],
    ['-f', 'raw', 'if=../in.raw', 'skip=100000'],
  ];
  for (const [i, args] of cases.entries()) {
    test(args.join(' '), () => {
      sameAsOracles(dir, ['dd', '-O', 'qcow2', ...args, 'of=out.qcow2'], { label: `dd${i}`, profiles: [VERSIONS[i % 2]] });
    });
  }
  test('through the real sandbox', () => {
    sameAsOracles(dir, ['dd', '-O', 'qcow2', 'if=../in.qcow2', 'bs=64k', 'of=out.qcow2'], { label: 'dd-sandbox', sandbox: true, profiles: ['7.2'] });
  });
  test('a missing input: qemu\'s message, no file', () => {
    for (const ours of sameAsOracles(dir, ['dd', '-O', 'qcow2', 'if=../nonexistent', 'of=out.qcow2'], { label: 'dd-missing' })) {
      assert.deepEqual([...ours.files.keys()], []);
    }
  });
});
