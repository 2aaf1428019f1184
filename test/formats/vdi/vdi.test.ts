// vdi driver against qemu-img 7.2 and 10.0: images built by the oracles (dynamic and static,
// converted from a mixed raw file and written by qemu-io), then info, the bytes of
// `convert -O raw` and `map` compared; hostile headers built byte by byte.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { vdiDriver } from '../../../src/formats/vdi/driver.ts';
import { MemoryDevice } from '../../../src/io/fd-device.ts';
import {
  assertUnalignedReads, checkAgainstOracles, openChain, oracleOpenError, ourOpenError, qemuOk, tempDir, writeSource,
} from '../qcow/legacy-helpers.ts';

test('vdi: dynamic and static images converted from a mixed raw file', () => {
  const { dir, cleanup } = tempDir('vdi');
  try {
    const src = join(dir, 'src.raw');
    writeSource(src, 5 * 1024 * 1024 + 3 * 512, 11);
    for (const [name, opts] of [['dyn', 'static=off'], ['static', 'static=on']] as const) {
      const img = join(dir, `${name}.vdi`);
      qemuOk('7.2', ['convert', '-f', 'raw', '-O', 'vdi', '-o', opts, src, img]);
      checkAgainstOracles(img, 'vdi', dir);
      openChain(img, ['vdi'], (image) => assertUnalignedReads(image, 5));
    }
  } finally {
    cleanup();
  }
});

test('vdi: qemu-io writes and zero writes into created dynamic and static images', () => {
  const { dir, cleanup } = tempDir('vdi');
  try {
    for (const [i, [size, opts]] of [['7M', 'static=off'], ['100000000', 'static=off'], ['9M', 'static=on']].entries()) {
      const img = join(dir, `w${i}.vdi`);
      qemuOk('10.0', ['create', '-q', '-f', 'vdi', '-o', opts, img, size]);
      // Zero writes on a static image write zero bytes, which instar cannot tell from file holes
      // without SEEK_DATA (see src/formats/raw/holes.ts): only dynamic images get them.
      const zero = opts === 'static=off' ? ['-c', 'write -z 5M 64k'] : [];
      qemuOk('7.2', ['-f', 'vdi', '-c', 'write -P 0x5a 1M 70k', '-c', 'write -P 0x33 4095k 2k', ...zero, img], 'qemu-io');
      checkAgainstOracles(img, 'vdi', dir);
    }
  } finally {
    cleanup();
  }
});

/** A VDI header the way qemu writes one, for the hostile tests to damage. */
function header(edit: (h: Buffer) => void): Buffer {
  const h = Buffer.alloc(512 + 4 * 4);
  h.write('<<< QEMU VM Virtual Disk Image >>>\n', 0, 'latin1');
  h.writeUInt32LE(0xbeda107f, 0x40);
  h.writeUInt32LE(0x00010001, 0x44);
  h.writeUInt32LE(0x190, 0x48);
  h.writeUInt32LE(1, 0x4c);
  h.writeUInt32LE(512, 0x154); // block map
  h.writeUInt32LE(1024, 0x158); // data
  h.writeUInt32LE(512, 0x168);
  h.writeBigUInt64LE(4n * 1024n * 1024n, 0x170);
  h.writeUInt32LE(1024 * 1024, 0x178);
  h.writeUInt32LE(4, 0x180);
  h.fill(0xff, 512, 512 + 16); // all blocks unallocated
  edit(h);
  return h;
}

test('vdi: hostile headers fail with qemu wording, fast and small', () => {
  const { dir, cleanup } = tempDir('vdi-hostile');
  try {
    const cases: [string, (h: Buffer) => void][] = [
      ['too-big', (h) => h.writeBigUInt64LE(0xffffffffffffffffn, 0x170)],
      ['version', (h) => h.writeUInt32LE(0x00020003, 0x44)],
      ['bmap-unaligned', (h) => h.writeUInt32LE(513, 0x154)],
      ['data-unaligned', (h) => h.writeUInt32LE(1000, 0x158)],
      ['sector-size', (h) => h.writeUInt32LE(4096, 0x168)],
      ['block-size', (h) => h.writeUInt32LE(2 * 1024 * 1024, 0x178)],
      ['no-room', (h) => h.writeUInt32LE(3, 0x180)],
      ['link-uuid', (h) => (h[0x1a8] = 1)],
      ['parent-uuid', (h) => (h[0x1c7] = 1)],
      ['too-many-blocks', (h) => { h.writeUInt32LE(0x40000000, 0x180); }],
      ['truncated', () => undefined],
    ];
    for (const [name, edit] of cases) {
      let bytes = header(edit);
      if (name === 'truncated') bytes = bytes.subarray(0, 0x100);
      const path = join(dir, `${name}.vdi`);
      writeFileSync(path, bytes);
      assert.equal(ourOpenError('vdi', bytes, path), oracleOpenError(path, 'vdi'), name);
    }
  } finally {
    cleanup();
  }
});

test('vdi: a huge disk whose map lies past the end of the file opens in bounded memory', () => {
  const { dir, cleanup } = tempDir('vdi-hostile');
  try {
    // The most blocks qemu accepts, block map far beyond EOF: it reads as zeros, so every
    // block maps to block 0. qemu allocates the whole 2 GiB map; instar pages it in.
    const bytes = header((h) => {
      h.writeBigUInt64LE(0x1fffff80n * 1024n * 1024n, 0x170);
      h.writeUInt32LE(0x1fffff80, 0x180);
      h.writeUInt32LE(0x7ffffe00, 0x154);
    });
    const path = join(dir, 'huge.vdi');
    writeFileSync(path, bytes);
    const before = process.memoryUsage().arrayBuffers;
    const img = vdiDriver.open(new MemoryDevice(bytes), { writable: false });
    const buf = new Uint8Array(4096);
    img.read(buf, img.virtualSize - 4096);
    assert.equal(img.extent(img.virtualSize - 1024 * 1024, 1024 * 1024).hostOffset, 1024);
    assert.ok(process.memoryUsage().arrayBuffers - before < 64 * 1024 * 1024);
    assert.equal(img.info()['virtual-size'], 0x1fffff80 * 1024 * 1024);
    const theirs = JSON.parse(qemuOk('10.0', ['info', '--output=json', '-f', 'vdi', path]));
    assert.equal(theirs['virtual-size'], img.virtualSize);
    assert.ok(readFileSync(path).length > 0);
  } finally {
    cleanup();
  }
});

test('vdi: duplicated, discarded and past-the-end block map entries, an odd disk size: read like qemu', () => {
  const { dir, cleanup } = tempDir('vdi-hostile');
  try {
    const data = Buffer.alloc(2 * 1024 * 1024);
    data.fill(0x11, 0, 1024 * 1024);
    data.fill(0x22, 1024 * 1024);
    const maps: [string, number[]][] = [
      ['duplicates', [1, 1, 0, 1]],
      ['discarded', [0, 0xfffffffe, 0xffffffff, 1]],
      ['past-eof', [0, 5000, 1, 0x7fffffff]],
      ['odd-size', [0, 1, 0, 1]],
    ];
    for (const [name, entries] of maps) {
      const h = header((b) => {
        entries.forEach((e, i) => b.writeUInt32LE(e, 512 + 4 * i));
        // VBoxManage writes sizes that are not whole sectors; qemu rounds them up.
        if (name === 'odd-size') b.writeBigUInt64LE(3n * 1024n * 1024n + 100n, 0x170);
      });
      const path = join(dir, `${name}.vdi`);
      writeFileSync(path, Buffer.concat([h, Buffer.alloc(1024 - h.length), data]));
      checkAgainstOracles(path, 'vdi', dir);
    }
  } finally {
    cleanup();
  }
});
