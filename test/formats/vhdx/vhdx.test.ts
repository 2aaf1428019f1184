// vhdx driver against qemu-img 7.2 and 10.0: images built by the oracles (dynamic, fixed, block
// and log sizes, data written by convert and qemu-io), then info, `convert -O raw` bytes and `map`
// compared; logs and hostile images built byte by byte.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { vhdxDriver } from '../../../src/formats/vhdx/driver.ts';
import { ImageError } from '../../../src/formats/types.ts';
import {
  FILE_PARAMETERS, LOGICAL_SECTOR_SIZE, PAGE83_DATA, PARENT_LOCATOR, VIRTUAL_DISK_SIZE,
} from '../../../src/formats/vhdx/guid.ts';
import { VERSIONS, runQemu } from '../../helpers/oracles.ts';
import {
  assertInfoMatches, assertUnalignedReads, ctxFor, hashImage, hashQemuRaw, oracleMap, oracleOpenError, ourMap, ourOpenError,
  qemuOk, tempDir, withImage, writeSource,
} from '../vpc/image-helpers.ts';
import {
  HEADERS, MiB, batRegion, metadataItem, metadataRegion, patchHeaders, patchRegionTable, view, writeLogEntry,
} from './vhdx-bytes.ts';

function checkAgainstOracles(path: string, dir: string): void {
  for (const v of VERSIONS) {
    withImage(vhdxDriver, path, ctxFor(v), (img) => {
      assertInfoMatches(img.info(), v, path, 'vhdx');
      assert.equal(hashImage(img), hashQemuRaw(v, path, 'vhdx', dir), `bytes vs convert -O raw (${v})`);
      assert.deepEqual(ourMap(img), oracleMap(v, path, 'vhdx'), `map vs qemu-img ${v}`);
    });
  }
}

test('vhdx: created images of several block and log sizes, written with qemu-io', () => {
  const { dir, cleanup } = tempDir('vhdx');
  try {
    const variants = [
      ['20M', 'subformat=dynamic,block_size=1M'],
      ['10000000', 'subformat=dynamic,block_size=8M,log_size=1M'],
      ['65M', 'subformat=dynamic,block_size=32M'],
      ['20M', 'subformat=dynamic,block_state_zero=off'],
      ['17M', 'subformat=fixed,block_size=8M'],
    ];
    for (const [i, [size, opts]] of variants.entries()) {
      const img = join(dir, `c${i}.vhdx`);
      qemuOk('7.2', ['create', '-q', '-f', 'vhdx', '-o', opts, img, size]);
      qemuOk('10.0', ['-f', 'vhdx', '-c', 'write -P 0x5a 1M 70k', '-c', 'write -P 0x33 8191k 2k', '-c', 'write -z 3M 64k', img], 'qemu-io');
      checkAgainstOracles(img, dir);
    }
  } finally {
    cleanup();
  }
});

test('vhdx: images converted from a mixed raw file', () => {
  const { dir, cleanup } = tempDir('vhdx');
  try {
    const src = join(dir, 'src.raw');
    writeSource(src, 9 * MiB + 3 * 512, 2);
    for (const [name, opts] of [
      ['dyn1m', 'subformat=dynamic,block_size=1M'],
      ['dyn8m', 'subformat=dynamic,block_size=8M'],
      ['fixed', 'subformat=fixed,block_size=1M'],
    ] as const) {
      const img = join(dir, `${name}.vhdx`);
      qemuOk('10.0', ['convert', '-f', 'raw', '-O', 'vhdx', '-o', opts, src, img]);
      checkAgainstOracles(img, dir);
      withImage(vhdxDriver, img, ctxFor('10.0'), (image) => assertUnalignedReads(image, 11));
    }
  } finally {
    cleanup();
  }
});

test('vhdx: data past the first chunk follows the sector bitmap interleave', () => {
  const { dir, cleanup } = tempDir('vhdx');
  try {
    const img = join(dir, 'big.vhdx');
    qemuOk('7.2', ['create', '-q', '-f', 'vhdx', '-o', 'block_size=32M', img, '9G']);
    // 4 GiB of payload per chunk (2^23 sectors): the writes straddle and pass the first bitmap entry.
    qemuOk('7.2', ['-f', 'vhdx', '-c', 'write -P 0x61 4095M 2M', '-c', 'write -P 0x62 8200M 1M', img], 'qemu-io');
    for (const v of VERSIONS) {
      withImage(vhdxDriver, img, ctxFor(v), (image) => {
        assertInfoMatches(image.info(), v, img, 'vhdx');
        // qemu-img dd cannot skip past 2 GiB (its offset arithmetic is 32-bit), so qemu-io
        // checks each range's pattern and we compare our bytes with the same pattern.
        for (const [atMiB, lengthMiB, pattern] of [[4094, 1, 0], [4095, 2, 0x61], [4097, 1, 0], [8200, 1, 0x62], [8201, 1, 0]]) {
          const r = runQemu(v, ['-r', '-f', 'vhdx', '-c', `read -P ${pattern} ${atMiB}M ${lengthMiB}M`, img], {}, 'qemu-io');
          assert.equal(r.status, 0);
          assert.doesNotMatch(r.stdout + r.stderr, /fail/i, `qemu-io ${v} pattern at ${atMiB} MiB`);
          const ours = new Uint8Array(lengthMiB * MiB);
          image.read(ours, atMiB * MiB);
          assert.ok(ours.every((b) => b === pattern), `our bytes at ${atMiB} MiB (${v})`);
        }
      });
    }
  } finally {
    cleanup();
  }
});

test('vhdx: a log needing replay is refused read-only exactly when qemu refuses it', () => {
  const { dir, cleanup } = tempDir('vhdx');
  try {
    const base = join(dir, 'base.vhdx');
    qemuOk('7.2', ['create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', base, '20M']);
    qemuOk('7.2', ['-f', 'vhdx', '-c', 'write -P 0x11 2M 1M', base], 'qemu-io');
    const modes = {
      valid: { opens: false, edit: (b: Uint8Array) => writeLogEntry(b) },
      twoDescriptors: { opens: false, edit: (b: Uint8Array) => writeLogEntry(b, { descriptors: 2, sequence: 7n }) },
      badCrc: { opens: true, edit: (b: Uint8Array) => writeLogEntry(b, { corruptCrc: true }) },
      badDescriptor: { opens: false, edit: (b: Uint8Array) => writeLogEntry(b, { descriptorSignature: 'xxxx' }) },
      zeroSequence: { opens: true, edit: (b: Uint8Array) => writeLogEntry(b, { sequence: 0n }) },
      maxDescriptorsInOneSector: { opens: false, edit: (b: Uint8Array) => writeLogEntry(b, { descriptors: 126 }) },
      // More descriptors than one sector holds: qemu mis-reads them and fails with EINVAL.
      twoDescriptorSectors: { opens: false, edit: (b: Uint8Array) => writeLogEntry(b, { descriptors: 127 }) },
      twoDescriptorSectorsBadCrc: { opens: false, edit: (b: Uint8Array) => writeLogEntry(b, { descriptors: 200, corruptCrc: true }) },
      shortEntryBadCrc: { opens: true, edit: (b: Uint8Array) => writeLogEntry(b, { descriptors: 126, corruptCrc: true }) },
    };
    for (const [label, { opens, edit }] of Object.entries(modes)) {
      const bytes = new Uint8Array(readFileSync(base));
      edit(bytes);
      const img = join(dir, `log-${label}.vhdx`);
      writeFileSync(img, bytes);
      if (opens) checkAgainstOracles(img, dir);
      else for (const v of VERSIONS) assert.equal(ourOpenError(vhdxDriver, bytes, ctxFor(v), img), oracleOpenError(v, img, 'vhdx'), `${label} (${v})`);
    }
    // An entry as long as the log, with a bad checksum: qemu's scan wraps to where it started
    // and never ends; ours stops on its read budget with an ImageError.
    const looping = new Uint8Array(readFileSync(base));
    writeLogEntry(looping, { descriptors: 1, sectors: 256, corruptCrc: true });
    const loopImg = join(dir, 'log-loop.vhdx');
    writeFileSync(loopImg, looping);
    for (const v of VERSIONS) {
      const r = runQemu(v, ['info', loopImg], { timeoutMs: 2000 });
      assert.ok(r.signal !== null, `qemu-img ${v} was expected to hang on a looping log`);
      assert.match(ourOpenError(vhdxDriver, looping, ctxFor(v), loopImg), /VHDX log scan does not terminate/);
    }
    // A writable open replays the log through the device's write() (test/check/repair-vhdx.test.ts
    // compares the result with qemu's), and then opens clean.
    const dirty = new Uint8Array(readFileSync(base));
    writeLogEntry(dirty);
    const writes: number[] = [];
    const image = vhdxDriver.open({
      size: dirty.length,
      read(buf: Uint8Array, pos: number) { buf.set(dirty.subarray(pos, pos + buf.length)); return Math.min(buf.length, dirty.length - pos); },
      write(buf: Uint8Array, pos: number) { dirty.set(buf, pos); writes.push(pos); },
    }, { writable: true, displayName: 'x' });
    assert.equal(image.virtualSize, 20 * MiB);
    assert.ok(writes.includes(4 * MiB), 'the data sector was written');
    assert.ok(vhdxDriver.open(new (class {
      size = dirty.length;
      read(buf: Uint8Array, pos: number) { buf.set(dirty.subarray(pos, pos + buf.length)); return Math.min(buf.length, dirty.length - pos); }
    })(), { writable: false, displayName: 'x' }), 'the replayed image opens read-only');
  } finally {
    cleanup();
  }
});

test('vhdx: blocks in states qemu cannot read fail the read as qemu-img convert fails', () => {
  const { dir, cleanup } = tempDir('vhdx');
  try {
    const img = join(dir, 'state.vhdx');
    qemuOk('7.2', ['create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', img, '4M']);
    for (const state of [4, 7]) {
      const bytes = new Uint8Array(readFileSync(img));
      view(bytes).setBigUint64(batRegion(bytes).offset + 8, BigInt(state), true);
      writeFileSync(img, bytes);
      for (const v of VERSIONS) {
        const r = runQemu(v, ['convert', '-f', 'vhdx', '-O', 'raw', img, join(dir, 'out.raw')]);
        assert.match(r.stderr, /error while reading at byte \d+: Input\/output error/);
        withImage(vhdxDriver, img, ctxFor(v), (image) => {
          image.read(new Uint8Array(MiB), 0);
          assert.throws(() => image.read(new Uint8Array(MiB), MiB), (e) => e instanceof ImageError && e.errno === 'EIO');
        });
      }
    }
  } finally {
    cleanup();
  }
});

type Mutation = (b: Uint8Array) => Uint8Array | void;

function hostileCases(): [string, Mutation][] {
  const md = (guid: Uint8Array, edit: (v: DataView, at: number) => void): Mutation => (b) => edit(view(b), metadataItem(b, guid).valueAt);
  const mdEntry = (guid: Uint8Array, edit: (v: DataView, at: number) => void): Mutation => (b) => edit(view(b), metadataItem(b, guid).entryAt);
  const bat = (index: number, value: bigint): Mutation => (b) => view(b).setBigUint64(batRegion(b).offset + 8 * index, value, true);
  const rt = (edit: (v: DataView, at: number, b: Uint8Array) => void): Mutation => (b) => patchRegionTable(b, (v, at) => edit(v, at, b));
  return [
    ['only the signature', (b) => b.slice(0, 100)],
    ['no signature', (b) => void b.fill(0, 0, 8)],
    ['both headers bad CRC', (b) => void (b[HEADERS[0] + 8] ^= 1, b[HEADERS[1] + 8] ^= 1)],
    ['equal sequence, different headers', (b) => patchHeaders(b, (v, at) => { v.setBigUint64(at + 8, 5n, true); v.setUint32(at + 68, at === HEADERS[0] ? MiB : 2 * MiB, true); })],
    ['header version 2', (b) => patchHeaders(b, (v, at) => v.setUint16(at + 66, 2, true))],
    ['log offset not MiB-aligned', (b) => patchHeaders(b, (v, at) => v.setBigUint64(at + 72, BigInt(MiB + 4096), true))],
    ['log offset 0', (b) => patchHeaders(b, (v, at) => v.setBigUint64(at + 72, 0n, true))],
    ['log version 1', (b) => patchHeaders(b, (v, at) => v.setUint16(at + 64, 1, true))],
    ['log length not MiB multiple, dirty', (b) => patchHeaders(b, (v, at) => { v.setUint32(at + 68, MiB + 4096, true); v.setUint8(at + 48, 1); })],
    ['log past 2^63, dirty', (b) => patchHeaders(b, (v, at) => { v.setBigUint64(at + 72, 0x7fff_ffff_fff0_0000n, true); v.setUint8(at + 48, 1); })],
    ['region table bad CRC', (b) => void (b[192 * 1024 + 20] ^= 1)],
    ['region table 2048 entries', rt((v, at) => v.setUint32(at + 8, 2048, true))],
    ['region table without BAT', rt((v, at) => v.setUint32(at + 8, 1, true))],
    ['BAT region overlapping the log', rt((v, _at, b) => v.setBigUint64(batRegion(b).entryAt + 16, BigInt(MiB), true))],
    ['unknown required region', rt((v, at) => { v.setUint32(at + 8, 3, true); v.setUint8(at + 16 + 64, 0x42); v.setBigUint64(at + 16 + 80, 99n * BigInt(MiB), true); v.setUint32(at + 16 + 88, MiB, true); v.setUint32(at + 16 + 92, 1, true); })],
    ['BAT region too small', rt((v, _at, b) => v.setUint32(batRegion(b).entryAt + 24, 8, true))],
    ['BAT region near 2^63', rt((v, _at, b) => v.setBigUint64(batRegion(b).entryAt + 16, 0x7fff_ffff_fff0_0000n, true))],
    ['metadata region past EOF', rt((v, _at, b) => v.setBigUint64(metadataRegion(b).entryAt + 16, 1n << 40n, true))],
    ['metadata region near 2^64', rt((v, _at, b) => v.setBigUint64(metadataRegion(b).entryAt + 16, 0xffff_ffff_fff0_0000n, true))],
    ['metadata bad signature', (b) => void (b[metadataRegion(b).offset] ^= 1)],
    ['metadata entry count 2048', (b) => view(b).setUint16(metadataRegion(b).offset + 10, 2048, true)],
    ['metadata item missing', mdEntry(PAGE83_DATA, (v, at) => v.setUint8(at, 0x99))],
    ['unknown required metadata item', mdEntry(PAGE83_DATA, (v, at) => { v.setUint8(at, 0x99); v.setUint32(at + 24, 4, true); })],
    ['parent locator item', mdEntry(PAGE83_DATA, (v, at, ) => PARENT_LOCATOR.forEach((x, i) => v.setUint8(at + i, x)))],
    ['has_parent without locator', md(FILE_PARAMETERS, (v, at) => v.setUint32(at + 4, 2, true))],
    ['block size 0', md(FILE_PARAMETERS, (v, at) => v.setUint32(at, 0, true))],
    ['block size 3 MiB', md(FILE_PARAMETERS, (v, at) => v.setUint32(at, 3 * MiB, true))],
    ['block size 512 MiB', md(FILE_PARAMETERS, (v, at) => v.setUint32(at, 512 * MiB, true))],
    ['logical sector 1024', md(LOGICAL_SECTOR_SIZE, (v, at) => v.setUint32(at, 1024, true))],
    ['virtual size 2^64-1', md(VIRTUAL_DISK_SIZE, (v, at) => v.setBigUint64(at, 2n ** 64n - 1n, true))],
    ['virtual size 64 TiB + 1 block', md(VIRTUAL_DISK_SIZE, (v, at) => v.setBigUint64(at, 2n ** 46n + 2n ** 20n, true))],
    ['BAT region of 4 GiB', rt((v, _at, b) => v.setUint32(batRegion(b).entryAt + 24, 0xfff0_0000, true))],
    ['virtual size 2^63 with a 2 GiB BAT', (b) => {
      patchRegionTable(b, (v) => { v.setBigUint64(batRegion(b).entryAt + 16, 1n << 40n, true); v.setUint32(batRegion(b).entryAt + 24, 0x7ff0_0000, true); });
      view(b).setBigUint64(metadataItem(b, VIRTUAL_DISK_SIZE).valueAt, 2n ** 63n, true);
    }],
    ['BAT entry past EOF', bat(1, (1000n << 20n) | 6n)],
    ['BAT entry overflowing int64', bat(1, 0xffff_ffff_fff0_0006n)],
    ['BAT entry ending past EOF', (b) => view(b).setBigUint64(batRegion(b).offset + 8, (BigInt(b.length >> 20) << 20n) | 6n, true)],
    ['BAT entry over the metadata region', (b) => view(b).setBigUint64(batRegion(b).offset + 8, BigInt(metadataRegion(b).offset) | 6n, true)],
  ];
}

test('vhdx: hostile images fail with qemu-img\'s messages', () => {
  const { dir, cleanup } = tempDir('vhdx');
  try {
    const base = join(dir, 'base.vhdx');
    qemuOk('7.2', ['create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', base, '8M']);
    qemuOk('7.2', ['-f', 'vhdx', '-c', 'write -P 1 0 3M', base], 'qemu-io');
    for (const [label, mutate] of hostileCases()) {
      if (process.env.VHDX_CASE && !label.includes(process.env.VHDX_CASE)) continue;
      const bytes = new Uint8Array(readFileSync(base));
      const result = mutate(bytes) ?? bytes;
      const img = join(dir, 'h.vhdx');
      writeFileSync(img, result);
      for (const v of VERSIONS) {
        assert.equal(ourOpenError(vhdxDriver, result, ctxFor(v), img, label), oracleOpenError(v, img, 'vhdx'), `${label} (${v})`);
      }
    }
  } finally {
    cleanup();
  }
});

test('vhdx: virtual sizes qemu opens beyond 2^53 bytes are refused clearly, not rounded', () => {
  const { dir, cleanup } = tempDir('vhdx');
  try {
    const img = join(dir, 'huge.vhdx');
    qemuOk('7.2', ['create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', img, '8M']);
    const bytes = new Uint8Array(readFileSync(img));
    patchRegionTable(bytes, (v) => { v.setBigUint64(batRegion(bytes).entryAt + 16, 1n << 40n, true); v.setUint32(batRegion(bytes).entryAt + 24, 0x7ff0_0000, true); });
    view(bytes).setBigUint64(metadataItem(bytes, VIRTUAL_DISK_SIZE).valueAt, 2n ** 60n, true);
    writeFileSync(img, bytes);
    assert.match(qemuOk('10.0', ['info', img]), /virtual size: 1 EiB/);
    assert.match(ourOpenError(vhdxDriver, bytes, ctxFor('10.0'), img), /too large for instar/);
  } finally {
    cleanup();
  }
});

test('vhdx: damage qemu tolerates or routes around still reads as qemu reads it', () => {
  const { dir, cleanup } = tempDir('vhdx');
  try {
    const base = join(dir, 'base.vhdx');
    qemuOk('7.2', ['create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', base, '8M']);
    qemuOk('7.2', ['-f', 'vhdx', '-c', 'write -P 0x21 0 3M', '-c', 'write -P 0x22 5M 1M', base], 'qemu-io');
    const dirtyLog = (b: Uint8Array) => writeLogEntry(b);
    const cases: [string, Mutation, boolean][] = [
      ['header 1 bad CRC', (b) => void (b[HEADERS[0] + 8] ^= 1), true],
      ['header 2 bad CRC', (b) => void (b[HEADERS[1] + 8] ^= 1), true],
      ['second region table corrupt (qemu reads only the first)', (b) => void (b[256 * 1024 + 20] ^= 1), true],
      ['metadata entry count 2047', (b) => view(b).setUint16(metadataRegion(b).offset + 10, 2047, true), true],
      // Past the end of the file qemu reads zeros: every block NOT_PRESENT.
      ['BAT region past EOF', (b) => patchRegionTable(b, (v, at) => v.setBigUint64(batRegion(b).entryAt - 192 * 1024 + at + 16, 1n << 40n, true)), true],
      ['BAT states UNDEFINED, ZERO, UNMAPPED over data', (b) => {
        const at = batRegion(b).offset;
        [1n, 2n, 3n].forEach((state, i) => view(b).setBigUint64(at + 8 * i, (view(b).getBigUint64(at + 8 * i, true) & ~7n) | state, true));
      }, true],
      // A dirty log in the older header only: the newer header (clean) is current.
      ['dirty log in the older header', (b) => {
        dirtyLog(b);
        patchHeaders(b, (v, at) => v.setBigUint64(at + 8, 1000n, true), [0]);
        patchHeaders(b, (v, at) => { v.setBigUint64(at + 8, 1001n, true); b.fill(0, at + 48, at + 64); }, [1]);
      }, true],
      ['dirty log in the newer header', (b) => {
        dirtyLog(b);
        patchHeaders(b, (v, at) => { v.setBigUint64(at + 8, 1000n, true); b.fill(0, at + 48, at + 64); }, [0]);
        patchHeaders(b, (v, at) => v.setBigUint64(at + 8, 1001n, true), [1]);
      }, false],
    ];
    for (const [label, mutate, opens] of cases) {
      const bytes = new Uint8Array(readFileSync(base));
      mutate(bytes);
      const img = join(dir, 'm.vhdx');
      writeFileSync(img, bytes);
      if (opens) checkAgainstOracles(img, dir);
      else for (const v of VERSIONS) assert.equal(ourOpenError(vhdxDriver, bytes, ctxFor(v), img, label), oracleOpenError(v, img, 'vhdx'), `${label} (${v})`);
    }
  } finally {
    cleanup();
  }
});
