// The warnings a guest sends with its result or error are guest data: the host accepts a bounded
// list of {text, prefixed}, escapes control characters, and refuses anything else as a violation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseGuestMessage } from '../../src/host/sandbox/guest-messages.ts';
import { MAX_WARNINGS, MAX_WARNING_TEXT } from '../../src/protocol/messages.ts';
import { WarningList, errorWarnings } from '../../src/guest/describe-error.ts';
import { ImageError } from '../../src/formats/types.ts';

const parse = (o: unknown) => parseGuestMessage(JSON.stringify(o));

test('warnings ride on results and errors, escaped', () => {
  assert.deepEqual(parse({ type: 'result', value: 1, warnings: [{ text: 'warning: a\x1b[31m', prefixed: true }] }),
    { type: 'result', value: 1, warnings: [{ text: 'warning: a\\x1b[31m', prefixed: true }] });
  assert.deepEqual(parse({ type: 'error', message: 'boom', warnings: [{ text: 'qcow2: x\ny', prefixed: false }] }),
    { type: 'error', message: 'boom', warnings: [{ text: 'qcow2: x\\x0ay', prefixed: false }] });
});

test('too many, too long or malformed warnings are a protocol violation', () => {
  const many = Array.from({ length: MAX_WARNINGS + 1 }, () => ({ text: 'w', prefixed: true }));
  assert.equal(typeof parse({ type: 'result', value: 1, warnings: many }), 'string');
  assert.equal(typeof parse({ type: 'result', value: 1, warnings: [{ text: 'x'.repeat(MAX_WARNING_TEXT + 2), prefixed: true }] }), 'string');
  assert.equal(typeof parse({ type: 'result', value: 1, warnings: [{ text: 'x', prefixed: 'yes' }] }), 'string');
  assert.equal(typeof parse({ type: 'result', value: 1, warnings: [{ text: 'x', prefixed: true, extra: 1 }] }), 'string');
  assert.equal(typeof parse({ type: 'error', message: 'm', warnings: 'x' }), 'string');
});

test('the guest keeps its own list within the bounds, without repeats', () => {
  const list = new WarningList();
  for (let i = 0; i < 100; i++) list.add({ text: `w${i % 40}`.padEnd(5000, '.'), prefixed: true });
  assert.equal(list.list.length, MAX_WARNINGS);
  assert.ok(list.list.every((w) => w.text.length <= MAX_WARNING_TEXT));
  const e = Object.assign(new ImageError('Invalid argument'), { reports: ['line one'], warning: 'qcow2: notice' });
  assert.deepEqual(errorWarnings(e), [{ text: 'line one', prefixed: true }, { text: 'qcow2: notice', prefixed: false }]);
  assert.deepEqual(errorWarnings(new Error('x')), []);
});
