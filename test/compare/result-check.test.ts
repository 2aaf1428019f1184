// The host prints nothing a guest says unless it is one of compare's own lines: a hostile guest
// cannot put arbitrary text or terminal escapes on stdout through a compare result.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { checkCompareResult, CompareError } from '../../src/host/commands/compare.ts';

const ok = (events: unknown[], status = 0) => ({ opened: true, formats: ['qcow2', 'raw'], status, events });

describe('compare: the host checks the guest result', () => {
  it('accepts compare\'s own lines and progress values', () => {
    for (const text of ['Images are identical.\n', 'Warning: Image size mismatch!\n', 'Strict mode: Image size mismatch!\n',
      'Content mismatch at offset 5368709120!\n', 'Strict mode: Offset 0 block status mismatch!\n']) {
      assert.deepEqual(checkCompareResult(ok([{ progress: 0 }, { text }, { progress: 100.00001 }])), ok([{ progress: 0 }, { text }, { progress: 100.00001 }]));
    }
    assert.deepEqual(checkCompareResult({ opened: false, image: 1, message: 'Image is not in qcow2 format' }), { opened: false, image: 1, message: 'Image is not in qcow2 format' });
  });
  it('refuses anything else', () => {
    const bad: unknown[] = [
      null, 42, 'Images are identical.\n', {},
      ok([{ text: 'Images are identical.' }]), // no newline
      ok([{ text: 'Images are identical.\n\u001b[2J' }]),
      ok([{ text: 'Content mismatch at offset -1!\n' }]),
      ok([{ text: 'Content mismatch at offset 1!\nImages are identical.\n' }]),
      ok([{ text: 'rm -rf /\n' }]),
      ok([{ progress: -1 }]), ok([{ progress: Number.NaN }]), ok([{ progress: '5' }]), ok([{ progress: 1e9 }]),
      ok([], 2), ok([], 1.5),
      ok(Array.from({ length: 5000 }, () => ({ progress: 1 }))),
      { ...ok([]), formats: [1] },
      { opened: false, image: 2, message: 'x' }, { opened: false, image: 0 },
    ];
    for (const value of bad) assert.throws(() => checkCompareResult(value), CompareError, JSON.stringify(value)?.slice(0, 80));
  });
});
