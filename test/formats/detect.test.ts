// Format detection: the same answer as qemu's probes for every format qemu-img can create, and
// instar's safe default (unknown content refused unless it has a partition table).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, openSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runQemu, VERSIONS } from '../helpers/oracles.ts';
import { FdDevice, MemoryDevice } from '../../src/io/fd-device.ts';
import { detectFormat } from '../../src/formats/detect.ts';
import { probes } from '../../src/formats/probe-only.ts';
import { ImageError } from '../../src/formats/types.ts';
import { infoOp } from '../../src/ops/info.ts';
import type { BlockDevice } from '../../src/formats/types.ts';

function tempDir(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'instar-detect-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function detectFile(path: string, unsafeQuirks = false): string {
  const fd = openSync(path, 'r');
  try {
    return detectFormat(new FdDevice(fd, false), { unsafeQuirks, fileName: path });
  } finally {
    closeSync(fd);
  }
}

function oracleFormat(version: (typeof VERSIONS)[number], path: string): string {
  const r = runQemu(version, ['info', '--output=json', path]);
  assert.equal(r.status, 0, r.stderr);
  return (JSON.parse(r.stdout) as { format: string }).format;
}

const creatable: [string, string[]][] = [
  ['qcow2', []],
  ['qcow', []],
  ['vdi', []],
  ['qed', []],
  ['parallels', []],
  ['vhdx', []],
  ['vpc', []],
  ['vmdk', []],
  ['vmdk', ['-o', 'subformat=streamOptimized']],
  ['luks', ['--object', 'secret,id=s,data=pw', '-o', 'key-secret=s,iter-time=10']],
];

for (const [format, opts] of creatable) {
  test(`detect: ${format} ${opts.join(' ')} is detected as qemu detects it`, (t) => {
    const path = join(tempDir(t), `img.${format}`);
    const r = runQemu('10.0', ['create', '-q', '-f', format, ...opts, path, '4M']);
    assert.equal(r.status, 0, r.stderr);
    const got = detectFile(path);
    assert.equal(got, format);
    for (const v of VERSIONS) assert.equal(oracleFormat(v, path), got, `oracle ${v}`);
  });
}

test('detect: unknown content is refused by default, raw with --unsafe-quirks (as qemu)', (t) => {
  const path = join(tempDir(t), 'junk.bin');
  writeFileSync(path, Buffer.from('this is not a disk image, just some text\n'.repeat(100)));
  assert.throws(() => detectFile(path), (e: unknown) => {
    assert.ok(e instanceof ImageError);
    assert.match(e.message, /^Could not determine image format: not a known disk image format \(instar does not fall back to raw/);
    return true;
  });
  assert.equal(detectFile(path, true), 'raw');
  for (const v of VERSIONS) assert.equal(oracleFormat(v, path), 'raw');
});

test('detect: a disk with an MBR or a GPT is raw; an empty file is raw', (t) => {
  const dir = tempDir(t);
  const mbr = Buffer.alloc(1 << 20);
  mbr[446] = 0x80;
  mbr[446 + 4] = 0x83;
  mbr.writeUInt32LE(2048, 446 + 8);
  mbr.writeUInt32LE(100, 446 + 12);
  mbr[510] = 0x55;
  mbr[511] = 0xaa;
  const gpt = Buffer.alloc(1 << 20);
  gpt.write('EFI PART', 512, 'latin1');
  for (const [name, bytes] of [['mbr.img', mbr], ['gpt.img', gpt], ['empty.img', Buffer.alloc(0)]] as const) {
    const path = join(dir, name);
    writeFileSync(path, bytes);
    assert.equal(detectFile(path), 'raw', name);
    for (const v of VERSIONS) assert.equal(oracleFormat(v, path), 'raw', `${name} oracle ${v}`);
  }
  const bogusMbr = Buffer.from(mbr);
  bogusMbr[446] = 0x12; // a boot flag no partition table has
  assert.throws(() => detectFormat(new MemoryDevice(bogusMbr), { unsafeQuirks: false }), ImageError);
});

test('detect: formats qemu-img cannot create are recognised by their magic', () => {
  const bochs = Buffer.alloc(2048);
  bochs.write('Bochs Virtual HD Image', 0, 'latin1');
  bochs.write('Redolog', 32, 'latin1');
  bochs.write('Growing', 48, 'latin1');
  bochs.writeUInt32LE(0x00020000, 64);
  assert.equal(probes.bochs(bochs), 100);
  bochs.writeUInt32LE(0x00030000, 64);
  assert.equal(probes.bochs(bochs), 0);
  const cloop = Buffer.alloc(2048);
  cloop.write('#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n', 0, 'latin1');
  assert.equal(probes.cloop(cloop), 2);
  assert.equal(probes.dmg(Buffer.alloc(2048), 'x.dmg'), 2);
  assert.equal(probes.dmg(Buffer.alloc(2048), 'x.img'), 0);
  assert.equal(detectFormat(new MemoryDevice(cloop), { unsafeQuirks: false }), 'cloop');
});

test('detect: LUKS2 is luks (raw with --unsafe-quirks, as qemu: docs/luks2.md)', () => {
  const luks2 = Buffer.alloc(4096);
  luks2.write('LUKS\xba\xbe', 0, 'latin1');
  luks2.writeUInt16BE(2, 6);
  assert.equal(detectFormat(new MemoryDevice(luks2), { unsafeQuirks: false }), 'luks');
  assert.equal(detectFormat(new MemoryDevice(luks2), { unsafeQuirks: true }), 'raw');
});

test('detect: other LUKS versions, fixed VHD and DMG trailers are refused with a reason (ISO: test/formats/iso)', () => {
  const luks2 = Buffer.alloc(4096);
  luks2.write('LUKS\xba\xbe', 0, 'latin1');
  luks2.writeUInt16BE(3, 6);
  const vhd = Buffer.alloc(4096);
  vhd.write('conectix', 4096 - 512, 'latin1');
  const dmg = Buffer.alloc(4096);
  dmg.write('koly', 4096 - 512, 'latin1');
  const reasons: [Buffer, RegExp][] = [[luks2, /LUKS version 3 is not supported/], [vhd, /fixed-size VHD/], [dmg, /DMG/]];
  for (const [bytes, why] of reasons) {
    assert.throws(() => detectFormat(new MemoryDevice(bytes), { unsafeQuirks: false }), why);
    assert.equal(detectFormat(new MemoryDevice(bytes), { unsafeQuirks: true }), 'raw');
  }
});

function runInfo(dev: BlockDevice, options: Record<string, unknown>): unknown {
  return infoOp(options, { devices: [{ spec: { fd: 0, role: 'input', writable: false }, dev }], emit: () => {} });
}

test('info op: -f with an unknown driver, -f qcow2 on a raw file, -f raw on anything (qemu wording)', (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'r.raw');
  writeFileSync(path, Buffer.alloc(65536, 7));
  const dev = new MemoryDevice(Buffer.alloc(65536, 7));
  for (const [fmt, want] of [['foo', "Unknown driver 'foo'"], ['qcow2', 'Image is not in qcow2 format']]) {
    assert.throws(() => runInfo(dev, { format: fmt }), (e: unknown) => e instanceof ImageError && e.message === want);
    for (const v of VERSIONS) {
      const r = runQemu(v, ['info', '-f', fmt, path]);
      assert.equal(r.stderr, `qemu-img: Could not open '${path}': ${want}\n`);
      assert.equal(r.status, 1);
    }
  }
  assert.deepEqual(runInfo(dev, { format: 'raw' }), { format: 'raw', 'dirty-flag': false, 'virtual-size': 65536 });
  assert.throws(() => runInfo(dev, {}), /Could not determine image format/);
  assert.equal((runInfo(dev, { unsafeQuirks: true }) as { format: string }).format, 'raw');
});

test('info op: a detected bochs header goes to the bochs driver (every probed format now has one)', () => {
  const bochs = Buffer.alloc(2048);
  bochs.write('Bochs Virtual HD Image', 0, 'latin1');
  bochs.write('Redolog', 32, 'latin1');
  bochs.write('Growing', 48, 'latin1');
  bochs.writeUInt32LE(0x00020000, 64);
  assert.throws(() => runInfo(new MemoryDevice(bochs), {}), /Extent size must be at least 512/);
});
