// Hostile and odd VMDK files, built byte by byte: each must end in an ImageError (with qemu's
// wording where qemu has one, checked against both oracles) in bounded time and memory, or read
// exactly as qemu reads it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { deflateSync } from 'node:zlib';
import { join } from 'node:path';
import { MemoryDevice } from '../../../src/io/fd-device.ts';
import { ImageError } from '../../../src/formats/types.ts';
import { openVmdk } from '../../../src/formats/vmdk/driver.ts';
import { BareErrnoError, NeedFilesError } from '../../../src/formats/vmdk/errors.ts';
import { ROOT, VERSIONS, runQemu } from '../../helpers/oracles.ts';
import { GD_AT_END, cowdImage, descriptorText, seSparseExtent, sparseHeader, sparseImage, streamImage } from './craft.ts';
import { driverMap, imageHash, infoDifferences, openAsHost, oracleInfo, oracleMap, oracleRawHash, tempDir } from './helpers.ts';

const TIME_LIMIT_MS = 2000;
const MEMORY_LIMIT = 32 * 1024 * 1024;

/** Runs `fn` and checks it stayed within the time and fresh-buffer memory bounds. */
function bounded<T>(fn: () => T): T {
  const before = process.memoryUsage().arrayBuffers;
  const start = performance.now();
  try {
    return fn();
  } finally {
    assert.ok(performance.now() - start < TIME_LIMIT_MS, 'took too long');
    assert.ok(process.memoryUsage().arrayBuffers - before < MEMORY_LIMIT, 'allocated too much');
  }
}

function openError(bytes: Uint8Array, displayName?: string): ImageError {
  try {
    bounded(() => openVmdk(new MemoryDevice(bytes), { writable: false, displayName }));
  } catch (e) {
    assert.ok(e instanceof ImageError, `not an ImageError: ${String(e)}`);
    return e;
  }
  assert.fail('opened');
}

/**
 * Both oracles refuse the file with "Could not open 'X': <message>", and so do we, word for word,
 * when opened under the same name. A RegExp checks only the oracles (and `ours` for us).
 */
function sameErrorAsQemu(bytes: Uint8Array, message: string | RegExp, besides: Record<string, Uint8Array> = {}): void {
  const { dir, cleanup } = tempDir();
  try {
    for (const [name, content] of Object.entries(besides)) writeFileSync(join(dir, name), content);
    const path = join(dir, 'hostile.vmdk');
    writeFileSync(path, bytes);
    const devices = new Map(Object.entries(besides).map(([name, content]) => [name, new MemoryDevice(content)]));
    let ours: ImageError | undefined;
    try {
      bounded(() => openVmdk(new MemoryDevice(bytes), { writable: false, displayName: path, devices }));
    } catch (e) {
      assert.ok(e instanceof ImageError, `not an ImageError: ${String(e)}`);
      ours = e;
    }
    assert.ok(ours, `we opened it (expected: ${String(message)})`);
    const expected = typeof message === 'string' ? message.replaceAll('$PATHDIR', dir).replaceAll('$PATH', path) : message;
    for (const v of VERSIONS) {
      const r = runQemu(v, ['info', '-f', 'vmdk', path], { timeoutMs: 20_000 });
      const prefix = `qemu-img: Could not open '${path}': `;
      assert.equal(r.status, 1, `qemu-img ${v} status`);
      assert.ok(r.stderr.startsWith(prefix), r.stderr);
      const said = r.stderr.slice(prefix.length).trimEnd();
      if (typeof expected === 'string') assert.equal(said, expected, `qemu-img ${v}`);
      else assert.match(said, expected, `qemu-img ${v}`);
      if (typeof expected === 'string') assert.equal(ours.message, said, 'ours vs qemu');
    }
  } finally {
    cleanup();
  }
}

const grain = (v: number) => new Uint8Array(65536).fill(v);

test('header: truncated, empty, bad grain sizes, version, table sizes', () => {
  sameErrorAsQemu(Buffer.concat([Buffer.from('KDMV'), Buffer.alloc(6)]), 'L1 entry size is invalid');
  sameErrorAsQemu(sparseImage({ granularity: 0n }), 'L1 entry size is invalid');
  sameErrorAsQemu(sparseImage({ granularity: 1n << 63n }), 'L1 entry size is invalid');
  sameErrorAsQemu(sparseImage({ granularity: 1n << 22n }), 'Invalid granularity, image may be corrupt');
  sameErrorAsQemu(sparseImage({ version: 4 }), 'Unsupported VMDK version 4');
  sameErrorAsQemu(sparseImage({ numGtesPerGt: 513 }), 'L2 table size too big');
  sameErrorAsQemu(sparseImage({ grainOffset: 1n << 20n }), 'File truncated, expecting at least 536870912 bytes');
  sameErrorAsQemu(sparseImage({ grainOffset: 1n << 60n }), 'File truncated, expecting at least 0 bytes');
  sameErrorAsQemu(new Uint8Array(0), 'File is too small, not a valid image');
});

test('header: absurd capacities are refused before any allocation', () => {
  sameErrorAsQemu(sparseImage({ capacity: (1n << 54n) - 1n }), 'Could not refresh total sector count: File too large');
  sameErrorAsQemu(sparseImage({ capacity: (1n << 64n) - 1n }), 'Could not refresh total sector count: File too large');
  // qemu opens these and fails each size query later ("Can't get image size"): so does instar
  // (Image.sizeFailure, worded by each command: test/differential/size-query.test.ts).
  const sizeFailure = (capacity: bigint) => bounded(() => openVmdk(new MemoryDevice(sparseImage({ capacity })), { writable: false })).sizeFailure;
  assert.deepEqual(sizeFailure(1n << 62n), { errno: 27, sectors: false, sectorCount: 1n << 62n });
  assert.deepEqual(sizeFailure((1n << 63n) + 5n), { errno: -5, sectors: true });
});

test('grain directory past end of file, or at a position the block layer refuses', () => {
  const { dir, cleanup } = tempDir();
  try {
    const far = sparseImage({ gdOffset: 1n << 40n, grains: new Map([[0, grain(5)]]) });
    const path = join(dir, 'far.vmdk');
    writeFileSync(path, far);
    const img = bounded(() => openVmdk(new MemoryDevice(far), { writable: false }));
    for (const v of VERSIONS) assert.equal(imageHash(img), oracleRawHash(v, path, dir));
    sameErrorAsQemu(sparseImage({ gdOffset: 1n << 54n }), "Could not read l1 table from extent '$PATH': Input/output error");
  } finally {
    cleanup();
  }
});

test('a grain directory claiming 32 Mi entries costs only what the file holds', () => {
  const { dir, cleanup } = tempDir();
  try {
    const bytes = sparseImage({ capacity: 1n << 25n, granularity: 1n, numGtesPerGt: 1 });
    const path = join(dir, 'bigl1.vmdk');
    writeFileSync(path, bytes);
    const img = bounded(() => openVmdk(new MemoryDevice(bytes), { writable: false, displayName: path }));
    for (const v of VERSIONS) assert.deepEqual(infoDifferences(img.info(), oracleInfo(v, path)), []);
    const head = new Uint8Array(1 << 20);
    bounded(() => img.read(head, 0));
    assert.ok(head.every((b) => b === 0));
  } finally {
    cleanup();
  }
});

test('a grain beyond a truncated directory size reads as zeros, as qemu reads it', () => {
  const { dir, cleanup } = tempDir();
  try {
    // l1 size = (2^41 + 1023) / 512 = 2^32 + 1, kept in 32 bits by qemu: one entry.
    const bytes = sparseImage({ capacity: (1n << 41n) + 512n, granularity: 1n, grains: new Map([[0, grain(9).subarray(0, 512)]]) });
    const path = join(dir, 'l1trunc.vmdk');
    writeFileSync(path, bytes);
    const img = openVmdk(new MemoryDevice(bytes), { writable: false, displayName: path });
    const buf = new Uint8Array(512).fill(1);
    img.read(buf, 2 ** 40);
    assert.ok(buf.every((b) => b === 0));
    assert.throws(() => img.extent(2 ** 40, 512), (e: unknown) => e instanceof ImageError && e.errno === 'EIO');
    for (const v of VERSIONS) {
      const r = runQemu(v, ['-f', 'vmdk', '-c', 'read -P 0 1T 512', path], {}, 'qemu-io');
      assert.match(r.stdout, /read 512\/512 bytes/, `qemu-io ${v}: ${r.stdout}${r.stderr}`);
    }
  } finally {
    cleanup();
  }
});

test('stream-optimized: footer checks, footer that points at itself, bad compressed grains', () => {
  sameErrorAsQemu(streamImage({ grains: new Map([[0, grain(3)]]), footer: { magic: 'XXXX' } }), 'Invalid footer');
  sameErrorAsQemu(sparseHeader({ gdOffset: GD_AT_END }), 'Failed to read footer: Input/output error');
  const loop = streamImage({ grains: new Map([[0, grain(3)]]), footer: { gdOffset: GD_AT_END } });
  sameErrorAsQemu(loop, "Could not read l1 table from extent '$PATH': Input/output error");

  const bomb = deflateSync(new Uint8Array(1 << 20));
  const bad = {
    'size 0': { size: 0, bytes: new Uint8Array(16) },
    'size 4 GiB': { size: 0xffffffff, bytes: new Uint8Array(16) },
    'not zlib': { size: 100, bytes: new Uint8Array(100).fill(0x41) },
    'inflates past the grain': { size: bomb.length, bytes: bomb },
    truncated: { size: 40, bytes: deflateSync(grain(1).map((_, i) => i * 7)).subarray(0, 40) },
  };
  const { dir, cleanup } = tempDir();
  try {
    for (const [name, g] of Object.entries(bad)) {
      const bytes = streamImage({ rawGrains: new Map([[0, g]]) });
      const img = openVmdk(new MemoryDevice(bytes), { writable: false });
      assert.throws(() => bounded(() => imageHash(img)), (e: unknown) => e instanceof ImageError && e.errno === 'EINVAL', name);
      const path = join(dir, 'bad.vmdk');
      writeFileSync(path, bytes);
      for (const v of VERSIONS) {
        const r = runQemu(v, ['convert', '-O', 'raw', path, join(dir, 'out.raw')], { timeoutMs: 20_000 });
        assert.equal(r.stderr, 'qemu-img: error while reading at byte 0: Invalid argument\n', `${name}, qemu-img ${v}`);
      }
    }
  } finally {
    cleanup();
  }
});

test('crafted stream-optimized and zeroed-grain images read as qemu reads them', () => {
  const { dir, cleanup } = tempDir();
  try {
    const text = Buffer.from('hello vmdk '.repeat(6000)).subarray(0, 65536);
    const images = {
      // The last grain is partial (capacity 15 grains + 8 sectors) and stored compressed short.
      stream: streamImage({ capacity: 15n * 128n + 8n, grains: new Map([[0, grain(3)], [2, text], [15, text.subarray(0, 4096)]]) }),
      zeroed: sparseImage({ flags: 7, grains: new Map([[2, grain(1)]]), zeroGtes: [5] }),
      // Without the zeroed-grain flag a GTE of 1 points at sector 1: the descriptor.
      notZeroed: sparseImage({ flags: 3, grains: new Map([[2, grain(1)]]), zeroGtes: [5] }),
    };
    for (const [name, bytes] of Object.entries(images)) {
      const path = join(dir, `${name}.vmdk`);
      writeFileSync(path, bytes);
      const img = openVmdk(new MemoryDevice(bytes), { writable: false, displayName: path });
      for (const v of VERSIONS) {
        assert.deepEqual(infoDifferences(img.info(), oracleInfo(v, path)), [], `${name} info, ${v}`);
        assert.equal(imageHash(img), oracleRawHash(v, path, dir), `${name} bytes, ${v}`);
      }
    }
  } finally {
    cleanup();
  }
});

test('COWD (VMDK3) sparse files: info as qemu reports it, zero grain size reads zeros', () => {
  const { dir, cleanup } = tempDir();
  try {
    for (const granularity of [16, 0]) {
      const bytes = cowdImage({ granularity, diskSectors: 2048, l1dirSize: 1 });
      const path = join(dir, `cowd${granularity}.vmdk`);
      writeFileSync(path, bytes);
      const img = openVmdk(new MemoryDevice(bytes), { writable: false, displayName: path });
      for (const v of VERSIONS) assert.deepEqual(infoDifferences(img.info(), oracleInfo(v, path)), []);
      // qemu divides by the grain size here and dies of SIGFPE; we read zeros.
      const buf = new Uint8Array(4096).fill(1);
      img.read(buf, 0);
      assert.ok(buf.every((b) => b === 0));
    }
  } finally {
    cleanup();
  }
});

const desc = (extents: string[], createType = 'monolithicFlat', extra = '') => Buffer.from(descriptorText({ createType, extents, extra }), 'latin1');

test('descriptor: NUL bytes, bad lines, bad types, missing CID, unterminated parent hint', () => {
  const withNul = Buffer.from('version=1\nCID=1\nparentCID=ffffffff\n\0createType="monolithicFlat"\nRW 8 FLAT "x" 0\n', 'latin1');
  sameErrorAsQemu(withNul, 'invalid VMDK image descriptor');
  sameErrorAsQemu(desc(['RW 8 FLAT "x"']), 'Invalid extent line: RW 8 FLAT "x"');
  sameErrorAsQemu(desc(['RW 8 VMFS "x" 5'], 'vmfs'), 'Invalid extent line: RW 8 VMFS "x" 5');
  sameErrorAsQemu(desc(['RW 8 FLAT "x" 0'], 'monolithicSparse'), "Unsupported image type 'monolithicSparse'");
  sameErrorAsQemu(desc(['RW 8 FLAT "x" 0'], 'a'.repeat(200)), 'invalid VMDK image descriptor');
  const noCid = Buffer.from('version=1\ncreateType="monolithicFlat"\nRW 8 FLAT "x" 0\n', 'latin1');
  const badHint = desc(['RW 8 FLAT "x" 0', 'parentFileNameHint="base.vmdk']);
  const x = { x: new Uint8Array(4096) };
  for (const bytes of [noCid, badHint]) {
    sameErrorAsQemu(bytes, "Could not open '$PATH': Invalid argument", x);
    // Without a display name the driver leaves qemu's inner prefix to the caller.
    const devices = new Map([['x', new MemoryDevice(x.x)]]);
    assert.throws(() => openVmdk(new MemoryDevice(bytes), { writable: false, devices }), (e: unknown) => e instanceof BareErrnoError && e.message === 'Invalid argument' && !e.prefixed);
  }
});

test('descriptor: files it names come back as NeedFilesError, never opened by the driver', () => {
  const e = openError(desc(['RW 8 FLAT "/etc/passwd" 0', 'RW 8 SPARSE "../../x.vmdk"', 'RW 8 FLAT "/etc/passwd" 0']));
  assert.ok(e instanceof NeedFilesError);
  // A flat extent is asked for as 'raw' (only the strength of the host's lock on it rides on that).
  assert.deepEqual(e.files, [
    { role: 'extent', name: '/etc/passwd', format: 'raw' },
    { role: 'extent', name: '../../x.vmdk' },
  ]);
  // The driver cannot open a path even if it wanted to: no module in its folder imports fs.
  const folder = join(ROOT, 'src', 'formats', 'vmdk');
  for (const f of readdirSync(folder)) assert.doesNotMatch(readFileSync(join(folder, f), 'utf8'), /from ['"](node:)?fs/, f);
});

test('descriptor: 10 000 extents, no extents, absurd sector counts, self-nesting', () => {
  // sscanf skips newlines: each blank line before an extent line parses as that line again.
  const blank = Buffer.from('version=1\nCID=1\nparentCID=2\ncreateType="monolithicFlat"\n' + '\n'.repeat(1_000_000), 'latin1');
  // No extent line at all: qemu opens a 0-byte disk (test/formats/vmdk/no-extents.test.ts).
  assert.equal(bounded(() => openVmdk(new MemoryDevice(blank), { writable: false })).virtualSize, 0);
  assert.match(openError(Buffer.concat([blank, Buffer.from('RW 8 FLAT "x" 0\n')])).message, /more than 1024 extents/);
  // One extent line spread over half a million blank lines: scanned once, not once per line.
  assert.ok(openError(Buffer.from(`version=1\ncreateType="vmfs"\nRW${' \n'.repeat(500_000)}8 VMFS "x"\n`)) instanceof NeedFilesError);
  const many = desc(Array.from({ length: 10_000 }, (_, i) => `RW 1 FLAT "x" ${i}`));
  assert.match(openError(many).message, /more than 1024 extents/);
  // Lines qemu skips name no file to open, and leave a 0-byte disk.
  const skipped = openVmdk(new MemoryDevice(desc(['RDONLY 8 FLAT "/etc/passwd" 0', 'RW 8 ZERO "x"', 'RW 0 FLAT "x" 0'])), { writable: false });
  assert.equal(skipped.virtualSize, 0);
  assert.deepEqual(skipped.extentFiles, []);
  const { dir, cleanup } = tempDir();
  try {
    writeFileSync(join(dir, 'x'), new Uint8Array(4096));
    const huge = join(dir, 'huge.vmdk');
    writeFileSync(huge, desc(['RW 9223372036854775807 FLAT "x" 0']));
    assert.throws(() => bounded(() => openAsHost(huge)), { message: 'Could not refresh total sector count: File too large' });
    sameErrorAsQemu(readFileSync(huge), 'Could not refresh total sector count: File too large', { x: new Uint8Array(4096) });
    // A sparse header whose descriptor names the file itself: qemu recurses until it crashes.
    const self = join(dir, 'self.vmdk');
    writeFileSync(self, sparseImage({ capacity: 0n, descriptor: descriptorText({ createType: 'twoGbMaxExtentSparse', extents: ['RW 8 SPARSE "self.vmdk"'] }) }));
    assert.throws(() => bounded(() => openAsHost(self)), { message: 'VMDK descriptors nested too deeply' });
    const notVmdk = join(dir, 'notvmdk.vmdk');
    writeFileSync(notVmdk, desc(['RW 8 SPARSE "x"'], 'twoGbMaxExtentSparse'));
    assert.throws(() => openAsHost(notVmdk), { message: 'Image not in VMDK format' });
  } finally {
    cleanup();
  }
});

test('descriptor: mixed flat and sparse extents (no cluster-size, no dirty-flag), skipped lines', () => {
  const { dir, cleanup } = tempDir();
  try {
    writeFileSync(join(dir, 'a.raw'), Buffer.alloc(1 << 20, 0x61));
    writeFileSync(join(dir, 's.vmdk'), sparseImage({ grains: new Map([[1, grain(0x62)]]) }));
    const path = join(dir, 'mixed.vmdk');
    writeFileSync(path, desc(['RW 1024 FLAT "a.raw" 512', 'RDONLY 8 FLAT "a.raw" 0', 'RW 0 FLAT "a.raw" 0', 'RW 2048 SPARSE "s.vmdk"', 'RW 8 ZERO "a.raw"'], 'twoGbMaxExtentSparse'));
    const opened = openAsHost(path);
    try {
      const info = opened.image.info();
      assert.equal(info['cluster-size'], undefined);
      assert.equal(info['dirty-flag'], undefined);
      for (const v of VERSIONS) {
        assert.deepEqual(infoDifferences(info, oracleInfo(v, path)), [], `info, ${v}`);
        assert.equal(imageHash(opened.image), oracleRawHash(v, path, dir), `bytes, ${v}`);
      }
    } finally {
      opened.close();
    }
  } finally {
    cleanup();
  }
});

test('seSparse extents: read, info and map as qemu has them; its header checks word for word', () => {
  const { dir, cleanup } = tempDir();
  try {
    const small = (v: number) => new Uint8Array(4096).fill(v);
    const ext = seSparseExtent({ grains: new Map([[0, small(1)], [1, small(2)], [7, small(3)], [200, small(4)]]), zero: [3], unmapped: [4] });
    writeFileSync(join(dir, 'x.sesparse'), ext);
    const path = join(dir, 'se.vmdk');
    writeFileSync(path, desc(['RW 2048 SESPARSE "x.sesparse"'], 'seSparse'));
    const opened = openAsHost(path);
    try {
      for (const v of VERSIONS) {
        assert.deepEqual(infoDifferences(opened.image.info(), oracleInfo(v, path)), [], `info, ${v}`);
        assert.deepEqual(driverMap(opened.image, v), oracleMap(v, path), `map, ${v}`);
        assert.equal(imageHash(opened.image), oracleRawHash(v, path, dir), `bytes, ${v}`);
      }
    } finally {
      opened.close();
    }
    const hostile: [Parameters<typeof seSparseExtent>[0], string][] = [
      [{ header: { 0: 0xbadn } }, 'Bad const header magic: 0x0000000000000bad'],
      [{ header: { 8: 1n } }, 'Unsupported version: 0x0000000000000001'],
      [{ header: { 24: 0n } }, 'Unsupported grain size: 0'],
      [{ header: { 32: 65n } }, 'Unsupported grain table size: 65'],
      [{ header: { 40: 2n } }, 'Unsupported flags: 0x0000000000000002'],
      [{ header: { 64: 5n } }, 'Unsupported reserved bits: 0x0000000000000000 0x0000000000000000 0x0000000000000005 0x0000000000000000'],
      [{ header: { 400: 1n } }, 'Unsupported non-zero const header padding'],
      [{ volatile: { 0: 1n } }, 'Bad volatile header magic: 0x0000000000000001'],
      [{ volatile: { 24: 1n } }, 'Image is dirty, Replaying journal not supported'],
      [{ volatile: { 100: 1n } }, 'Unsupported non-zero volatile header padding'],
      [{ header: { 136: 1n << 20n } }, 'L1 size too big'],
      [{ header: { 128: 1n << 54n } }, "Could not read l1 table from extent '$DIR/x.sesparse': Input/output error"],
    ];
    for (const [opts, message] of hostile) {
      const bad = seSparseExtent(opts);
      sameErrorAsQemu(desc(['RW 2048 SESPARSE "x.sesparse"'], 'seSparse'), message.replace('$DIR', '$PATHDIR'), { 'x.sesparse': bad });
    }
  } finally {
    cleanup();
  }
});

test("descriptor quirks of qemu's C parsing: lines joined by sscanf, CID found inside parentCID", () => {
  const { dir, cleanup } = tempDir();
  try {
    writeFileSync(join(dir, 'a.raw'), Buffer.alloc(1 << 20, 0x61));
    writeFileSync(join(dir, 'b.raw'), Buffer.alloc(1 << 20, 0x62));
    writeFileSync(join(dir, 'base.vmdk'), 'version=1\nCID=2\nparentCID=ffffffff\ncreateType="monolithicFlat"\nRW 16 FLAT "b.raw" 0\n');
    const variants: Record<string, string> = {
      // sscanf's blanks match newlines: the first "line" goes on into the next.
      joined: 'version=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\nRW 8\nFLAT "a.raw" 2\nRW 16 FLAT "b.raw" 0\n',
      // strstr finds "CID" inside "parentCID" first; hex with 0x, signs, and overflow.
      parentOnly: 'version=1\nparentCID=0x1f\ncreateType="twoGbMaxExtentFlat"\nRW 8 FLAT "a.raw" 0\n',
      negative: 'version=1\nCID=-2\nparentCID=123456789abcdef01\ncreateType="vmfs"\nRW 8 VMFS "b.raw"\n',
      // A hint in a comment counts; CRLF line ends; an access word longer than 10 characters.
      hinted: '# parentFileNameHint="base.vmdk"\r\nversion=1\r\nCID=1\r\nparentCID=2\r\ncreateType="monolithicFlat"\r\nRWRWRWRWRWRW 8 FLAT "b.raw" 0\r\nRW 8 FLAT "a.raw" 0\r\n',
    };
    for (const [name, text] of Object.entries(variants)) {
      const path = join(dir, `${name}.vmdk`);
      writeFileSync(path, text, 'latin1');
      const opened = openAsHost(path);
      try {
        for (const v of VERSIONS) {
          assert.deepEqual(infoDifferences(opened.image.info(), oracleInfo(v, path)), [], `${name} info, ${v}`);
          assert.equal(imageHash(opened.image), oracleRawHash(v, path, dir), `${name} bytes, ${v}`);
        }
      } finally {
        opened.close();
      }
    }
  } finally {
    cleanup();
  }
});

test('a hosted sparse header with no capacity carries a descriptor naming other extents', () => {
  const { dir, cleanup } = tempDir();
  try {
    writeFileSync(join(dir, 'a.raw'), Buffer.alloc(1 << 20, 0x61));
    const path = join(dir, 'wrapped.vmdk');
    // The descriptor sits at sector 4 here; qemu still looks for the CIDs at 0x200.
    const file = sparseImage({ capacity: 0n, descOffset: 4n, descriptor: descriptorText({ cid: '77', createType: 'junk' }) });
    file.write(descriptorText({ createType: 'twoGbMaxExtentFlat', extents: ['RW 2048 FLAT "a.raw" 0'] }), 4 * 512, 'latin1');
    writeFileSync(path, file);
    const opened = openAsHost(path);
    try {
      assert.deepEqual(opened.asked, [{ role: 'extent', name: 'a.raw', format: 'raw' }]);
      for (const v of VERSIONS) {
        assert.deepEqual(infoDifferences(opened.image.info(), oracleInfo(v, path)), [], `info, ${v}`);
        assert.equal(imageHash(opened.image), oracleRawHash(v, path, dir), `bytes, ${v}`);
      }
    } finally {
      opened.close();
    }
  } finally {
    cleanup();
  }
});

test('version 3 sparse files open read-only only, as qemu-io (read-write) shows', () => {
  const { dir, cleanup } = tempDir();
  try {
    const bytes = sparseImage({ version: 3 });
    const path = join(dir, 'v3.vmdk');
    writeFileSync(path, bytes);
    openVmdk(new MemoryDevice(bytes), { writable: false });
    assert.throws(() => openVmdk(new MemoryDevice(bytes), { writable: true }), { message: 'VMDK version 3 must be read only' });
    for (const v of VERSIONS) {
      const r = runQemu(v, ['-f', 'vmdk', '-c', 'read 0 512', path], {}, 'qemu-io');
      assert.match(r.stdout + r.stderr, /VMDK version 3 must be read only/, `qemu-io ${v}`);
    }
  } finally {
    cleanup();
  }
});

test('a backing file whose CID is not the parentCID: reads that reach it fail as in qemu', () => {
  const { dir, cleanup } = tempDir();
  try {
    const base = join(dir, 'base.vmdk');
    writeFileSync(base, sparseImage({ grains: new Map([[1, grain(0x42)]]), descriptor: descriptorText({ cid: '10' }) }));
    for (const [parentCid, ok] of [['10', true], ['11', false]] as const) {
      const path = join(dir, `top-${parentCid}.vmdk`);
      writeFileSync(path, sparseImage({ grains: new Map([[0, grain(0x41)]]), descriptor: descriptorText({ parentCid, extra: 'parentFileNameHint="base.vmdk"' }) }));
      const opened = openAsHost(path);
      try {
        const first = new Uint8Array(65536);
        opened.image.read(first, 0);
        for (const v of VERSIONS) {
          if (ok) assert.equal(imageHash(opened.image), oracleRawHash(v, path, dir), `bytes, ${v}`);
          else {
            assert.throws(() => imageHash(opened.image), (e: unknown) => e instanceof ImageError && e.errno === 'EINVAL');
            const r = runQemu(v, ['convert', '-O', 'raw', path, join(dir, 'out.raw')]);
            assert.match(r.stderr, /error while reading at byte 65536: Invalid argument/, `qemu-img ${v}`);
          }
        }
      } finally {
        opened.close();
      }
    }
  } finally {
    cleanup();
  }
});
