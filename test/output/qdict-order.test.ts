import { test } from 'node:test';
import assert from 'node:assert/strict';
import { qdictOrder, tdbHash } from '../../src/output/qdict-order.ts';
import { toQemuJson, quoteJsonString } from '../../src/output/json.ts';

// BlockGraphInfo members in QAPI schema order (qapi/block-core.json).
const IMAGE_INFO = ['filename', 'format', 'dirty-flag', 'actual-size', 'virtual-size', 'cluster-size', 'encrypted', 'compressed',
  'backing-filename', 'full-backing-filename', 'backing-filename-format', 'snapshots', 'format-specific', 'children'];

test('key order of ImageInfo is the order qemu-img prints', () => {
  const present = IMAGE_INFO.filter((k) => !['encrypted', 'compressed', 'snapshots'].includes(k));
  assert.deepEqual(qdictOrder(present), ['children', 'backing-filename-format', 'virtual-size', 'filename', 'cluster-size', 'format',
    'actual-size', 'format-specific', 'full-backing-filename', 'backing-filename', 'dirty-flag']);
});

test('within one bucket the most recent insertion comes first', () => {
  // 'children' and 'backing-filename-format' share bucket 206.
  assert.equal(tdbHash('children') % 512, tdbHash('backing-filename-format') % 512);
  assert.deepEqual(qdictOrder(['children', 'backing-filename-format']), ['backing-filename-format', 'children']);
  assert.deepEqual(qdictOrder(['backing-filename-format', 'children']), ['children', 'backing-filename-format']);
});

test('pretty JSON: indentation, empty containers, absent members', () => {
  const text = toQemuJson({ children: [], 'format-specific': { type: 'file', data: {} }, gone: undefined });
  assert.equal(text, '{\n    "children": [\n    ],\n    "format-specific": {\n        "type": "file",\n        "data": {\n        }\n    }\n}');
  assert.equal(toQemuJson([]), '[\n]');
});

test('strings are escaped the way qemu escapes them', () => {
  assert.equal(quoteJsonString('a\tb\u00e9\ufffd\u{1F600}\u007f\u001b[31m"\\x'), '"a\\tb\\u00E9\\uFFFD\\uD83D\\uDE00\\u007F\\u001B[31m\\"\\\\x"');
  assert.equal(quoteJsonString('\ud800\ufffe\ufdd0'), '"\\uFFFD\\uFFFD\\uFFFD"');
  assert.equal(quoteJsonString('\b\f\n\r\u0001'), '"\\b\\f\\n\\r\\u0001"');
});
