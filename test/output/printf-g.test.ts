import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { formatG } from '../../src/output/printf-g.ts';
import { sizeToStr } from '../../src/output/size.ts';

// Python's %-formatting rounds the exact binary value half-to-even, like glibc's printf.
function cPrintfG(values: number[], precision: number): string[] {
  const script = `import sys\nfor line in sys.stdin:\n    print('%.${precision}g' % float(line))`;
  const r = spawnSync('python3', ['-c', script], { input: values.map((v) => v.toString()).join('\n') + '\n', encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trimEnd().split('\n');
}

test('formatG matches C printf on ties, boundaries and random values', () => {
  const values = [1.125, 1.135, 2.5, 0.125, 999.5, 999.4, 1000, 99.95, 9.995, 0.0001, 0.00001234, 1e21, 123456789, 5.000115, 0.9765625, 1023 / 1024];
  let seed = 12345;
  const rand = () => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed / 2 ** 32;
  };
  for (let i = 0; i < 300; i++) values.push(Math.floor(rand() * 2 ** 20) / 2 ** Math.floor(rand() * 14));
  for (let i = 0; i < 100; i++) values.push(rand() * 10 ** Math.floor(rand() * 30 - 10));
  for (const p of [3, 6, 17]) {
    const expected = cPrintfG(values, p);
    values.forEach((v, i) => assert.equal(formatG(v, p), expected[i], `%.${p}g of ${v}`));
  }
});

test('sizeToStr follows size_to_str unit switching', () => {
  assert.equal(sizeToStr(0), '0 B');
  assert.equal(sizeToStr(999), '999 B');
  assert.equal(sizeToStr(1000), '0.977 KiB');
  assert.equal(sizeToStr(1024), '1 KiB');
  assert.equal(sizeToStr(1152), '1.12 KiB'); // 1.125 rounds to even
  assert.equal(sizeToStr(2297856), '2.19 MiB');
  assert.equal(sizeToStr(1073741824), '1 GiB');
  assert.equal(sizeToStr(1023 * 1024), '0.999 MiB');
  assert.equal(sizeToStr(1023 * 1024 + 600), '1 MiB'); // 0.9996 rounds up to 3 digits
  assert.equal(sizeToStr(2n ** 64n - 1n), '16 EiB');
  assert.equal(sizeToStr(2 ** 50), '1 PiB');
});
