// Human `info` cases the oracles cannot easily be made to show (qemu-img builds no such image).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { renderHumanInfo } from '../../src/output/human-info.ts';
import { snapshotLine } from '../../src/output/snapshot-table.ts';
import { profileFor } from '../../src/output/profile.ts';
import type { QDictValue } from '../../src/output/qobject.ts';

const v72 = profileFor('7.2');
const v10 = profileFor('10.0');

test('no actual size, no full backing name, empty format-specific data', () => {
  const info: QDictValue = {
    filename: 'x', format: 'f', 'virtual-size': 1536, 'backing-filename': 'json:{}',
    'format-specific': { type: 'f', data: {} },
  };
  const common = 'image: x\nfile format: f\nvirtual size: 1.5 KiB (1536 bytes)\ndisk size: unavailable\nbacking file: json:{} (cannot determine actual path)\n';
  assert.equal(renderHumanInfo(info, v72), common + 'Format specific information:\n');
  assert.equal(renderHumanInfo(info, v10), common); // 8.0+ prints no heading for empty data
});

test('snapshot rows: no icount, byte-counted padding, long clocks', () => {
  const row = { id: '12', name: 'ümlaut', vmStateSize: 1152, dateSec: 0, vmClockSec: 3600 * 123 + 61, vmClockNsec: 5_000_000 };
  process.env.TZ = 'UTC';
  assert.equal(snapshotLine(row, v72), '12        ümlaut          1.12 KiB 1970-01-01 00:00:00123:01:01.005           ');
  // 10.0 marks a missing instruction count with '--' (qemu-img 10.0 snapshot -l, measured).
  assert.equal(snapshotLine(row, v10), '12      ümlaut          1.12 KiB 1970-01-01 00:00:00  0123:01:01.005         --');
});

test('nested children print as protocol nodes under their path', () => {
  const leaf: QDictValue = { filename: 'f', format: 'file', 'actual-size': 0, 'virtual-size': 512, children: [] };
  const mid: QDictValue = { filename: 'm', format: 'raw', 'actual-size': 0, 'virtual-size': 512, children: [{ name: 'file', info: leaf }] };
  const top: QDictValue = { filename: 't', format: 'qcow2', 'actual-size': 0, 'virtual-size': 512, children: [{ name: 'file', info: mid }] };
  assert.equal(renderHumanInfo(top, v10), [
    'image: t', 'file format: qcow2', 'virtual size: 512 B (512 bytes)', 'disk size: 0 B',
    "Child node '/file':", '    image: m', '    file format: raw', '    virtual size: 512 B (512 bytes)', '    disk size: 0 B',
    "    Child node '/file/file':", '        filename: f', '        protocol type: file', '        file length: 512 B (512 bytes)', '        disk size: 0 B', '',
  ].join('\n'));
});
