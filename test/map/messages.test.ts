// The host's check of `map-entries` messages: guest data, so every malformed shape is refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseGuestMessage } from '../../src/host/sandbox/guest-messages.ts';
import { MAX_MAP_ENTRIES } from '../../src/protocol/messages.ts';

const line = (v: unknown) => JSON.stringify(v);

test('well-formed map-entries pass, empty chunks too', () => {
  const ok = { type: 'map-entries', entries: [[0, 65536, 0, 5, 327680, 0], [65536, 512, 1, 3, -1, -1]] };
  assert.deepEqual(parseGuestMessage(line(ok)), ok);
  assert.deepEqual(parseGuestMessage(line({ type: 'map-entries', entries: [] })), { type: 'map-entries', entries: [] });
  // Starts and lengths past 2^53 (a qcow2 of 2^61 bytes): integer doubles below 2^63.
  const huge = { type: 'map-entries', entries: [[0, 2 ** 61 - 2 ** 21, 0, 2, -1, -1], [2 ** 61 - 2 ** 21, 2 ** 21, 0, 5, 41943040, 0]] };
  assert.deepEqual(parseGuestMessage(line(huge)), huge);
});

test('host offsets outside the safe range travel as int64 decimal strings', () => {
  const ok = { type: 'map-entries', entries: [[0, 4096, 0, 7, '9223372036854775296', 0], [4096, 4096, 0, 7, '-9223372036854775808', 0], [8192, 512, 0, 7, '-1', 0]] };
  assert.deepEqual(parseGuestMessage(line(ok)), ok);
  const bad = ['9223372036854775808', '-9223372036854775809', '01', '-0', '+5', '1e3', ' 5', '', '0x10', '12345678901234567890'];
  for (const offset of bad) assert.equal(typeof parseGuestMessage(line({ type: 'map-entries', entries: [[0, 1, 0, 5, offset, 0]] })), 'string', offset);
  // Only the offset may be a string.
  assert.equal(typeof parseGuestMessage(line({ type: 'map-entries', entries: [[0, '1', 0, 5, 0, 0]] })), 'string');
});

test('malformed map-entries are refused', () => {
  const bad = [
    { type: 'map-entries', entries: [[0, 1, 0, 5, 0]] },
    { type: 'map-entries', entries: [[0, -1, 0, 5, 0, 0]] },
    { type: 'map-entries', entries: [[-1, 1, 0, 5, 0, 0]] },
    { type: 'map-entries', entries: [[0, 1, 0, 5, -2, 0]] },
    { type: 'map-entries', entries: [[0, 1.5, 0, 5, 0, 0]] },
    { type: 'map-entries', entries: [[0, 2 ** 63, 0, 5, 0, 0]] },
    { type: 'map-entries', entries: [[2 ** 64, 1, 0, 5, 0, 0]] },
    { type: 'map-entries', entries: [[0, 1, 2 ** 60, 5, 0, 0]] },
    { type: 'map-entries', entries: [['0', 1, 0, 5, 0, 0]] },
    { type: 'map-entries', entries: {} },
    { type: 'map-entries', entries: [], extra: 1 },
    { type: 'map-entries', entries: Array.from({ length: MAX_MAP_ENTRIES + 1 }, () => [0, 1, 0, 0, -1, -1]) },
  ];
  for (const m of bad) assert.equal(typeof parseGuestMessage(line(m)), 'string', line(m).slice(0, 80));
});
