// -p: qemu-img's progress lines on stdout, byte for byte, for small images (qemu's accounting:
// data chunks of at most 2 MiB, a line per whole percent of movement, 100% and a newline at the end).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { runInstar, runQemu, VERSIONS } from '../helpers/oracles.ts';
import { qemu, qemuIo, tempDir } from './helpers.ts';
import { formatPercent, ProgressRule } from '../../src/output/progress.ts';

let dir: string;
let cleanup: () => void;
before(() => {
  ({ dir, cleanup } = tempDir());
  const img = (name: string, size: string, writes: string[]) => {
    qemu(['create', '-q', '-f', 'qcow2', join(dir, name), size]);
    if (writes.length) qemuIo(join(dir, name), writes);
  };
  img('islands.qcow2', '64M', ['write -P 1 0 1M', 'write -P 2 10M 3M']);
  img('empty.qcow2', '1M', []);
  img('many.qcow2', '32M', Array.from({ length: 40 }, (_, i) => `write -P ${i + 1} ${i * 700}k 100k`));
  img('big-run.qcow2', '24M', ['write -P 3 1M 9M', 'write -P 4 17M 5M']);
});
after(() => cleanup());

const cases: [string, string[]][] = [
  ['two data islands', ['-p', 'islands.qcow2']],
  ['an empty image', ['-p', 'empty.qcow2']],
  ['forty small islands', ['-p', 'many.qcow2']],
  ['long runs split in 2 MiB chunks', ['-p', 'big-run.qcow2']],
  ['-S 0 counts zero chunks too', ['-p', '-S', '0', 'islands.qcow2']],
  ['two sources', ['-p', 'islands.qcow2', 'many.qcow2']],
  ['-q silences -p', ['-p', '-q', 'islands.qcow2']],
  ['a failure ends the line', ['-p', 'missing.qcow2']],
];

for (const [name, args] of cases) {
  test(`convert -p: ${name}`, () => {
    for (const v of VERSIONS) {
      const theirs = runQemu(v, ['convert', ...args, join(dir, `q${v}.raw`)], { cwd: dir });
      const mine = runInstar(['convert', ...args, join(dir, 'mine.raw')], { cwd: dir, env: { INSTAR_QEMU_VERSION: v } });
      assert.equal(mine.stdout, theirs.stdout, `progress text differs from qemu-img ${v}`);
      assert.equal(mine.status, theirs.status);
      assert.equal(mine.stderr, theirs.stderr);
    }
  });
}

test('printf %3.2f rounding of floats: exact ties go to even', () => {
  assert.equal(formatPercent(Math.fround(37.125)), '37.12');
  assert.equal(formatPercent(Math.fround(37.375)), '37.38');
  assert.equal(formatPercent(Math.fround(100)), '100.00');
  assert.equal(formatPercent(Math.fround(1.5625)), '1.56');
});

test('the print rule: more than one percent since the last line, or 0, or 100', () => {
  const rule = new ProgressRule();
  assert.equal(rule.set(0), 0);
  assert.equal(rule.set(0.9), undefined);
  assert.equal(rule.set(1.0), undefined);
  assert.equal(rule.set(1.01), Math.fround(1.01));
  assert.equal(rule.set(1.5), undefined);
  assert.equal(rule.set(100), 100);
  assert.equal(rule.set(100), 100);
});
