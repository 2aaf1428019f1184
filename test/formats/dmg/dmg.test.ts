// dmg: UDIF images assembled byte by byte (koly trailer, XML plist or resource fork, mish tables
// with zero/raw/ignore/zlib chunks), read by instar and by both qemu-img oracles: info, map,
// convert -O raw byte for byte; hostile tables refused with qemu's wording in bounded time.
//
// Documented difference: on every dmg open, Debian's qemu-img 7.2 prints "qemu: module
// block-block-dmg-{bz2,lzfse} not found ..." and both print "qemu-img: warning: ..." lines for
// bzip2/lzfse/unknown chunks; instar does not print those lines (stderr is compared without them).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, ftruncateSync, openSync, readFileSync, writeSync, writeFileSync } from 'node:fs';
import { ImageDir } from '../../differential/harness.ts';
import { runInstar, runQemu, VERSIONS, type OracleVersion } from '../../helpers/oracles.ts';
import { LONG, tiered } from '../../helpers/long.ts';
import { buildDmg, buildDmgRsrc, deflateSync, koly, mishBlock, sectors, UDBZ, UDCM, UDIG, UDLE, UDRW, UDZE, UDZO, ULFO, type ChunkEntry } from './build.ts';

const images = new ImageDir('dmg');

const raw = sectors(4, 1);
const z = deflateSync(sectors(8, 2));
const fork = Buffer.concat([raw, z]);
const mixed: ChunkEntry[] = [
  { type: UDRW, sector: 0, sectorCount: 4, offset: 0, length: raw.length },
  { type: UDCM, sector: 0, sectorCount: 0, offset: 0, length: 0 },
  { type: UDZO, sector: 4, sectorCount: 8, offset: raw.length, length: z.length },
  { type: UDZE, sector: 12, sectorCount: 4, offset: 0, length: 0 },
  { type: UDIG, sector: 16, sectorCount: 4, offset: 0, length: 0 },
  { type: UDLE, sector: 20, sectorCount: 0, offset: 0, length: 0 },
];
const one = (type: number, sectorCount: bigint | number, length: bigint | number, offset: bigint | number = 0): Buffer =>
  buildDmg(fork, [mishBlock(0, [{ type, sector: 0, sectorCount, offset, length }])], 8);


/** The mixed table's XML plist with `insert` put `at` characters into its base64 text (glib's
 *  decoder skips non-alphabet bytes but takes '=' as a zero digit: a fuzz finding). */
function plistWithInsert(insert: string, at: number): Buffer {
  const img = buildDmg(fork, [mishBlock(0, mixed)], 20);
  const xml = img.subarray(fork.length, img.length - 512).toString('latin1');
  const start = xml.indexOf('<data>') + 6;
  const text = Buffer.from(xml.slice(0, start + at) + insert + xml.slice(start + at), 'latin1');
  return Buffer.concat([fork, text, koly({ xmlOffset: BigInt(fork.length), xmlLength: BigInt(text.length), sectorCount: 20n })]);
}

const good: Record<string, Buffer> = {
  'mixed.dmg': buildDmg(fork, [mishBlock(0, mixed)], 20),
  'rsrc.dmg': buildDmgRsrc(fork, [mishBlock(0, mixed)], 20),
  // Two mish blocks: the second's sectors and data offset are relative to its own header fields.
  'two-blocks.dmg': buildDmg(fork, [mishBlock(0, mixed.slice(0, 1)), mishBlock(4, [{ ...mixed[2], sector: 0, offset: 0 }], { dataOffset: BigInt(raw.length) })], 12),
  // An odd file size: the trailer is not sector aligned.
  'odd.dmg': buildDmg(Buffer.concat([fork, Buffer.from('xyz')]), [mishBlock(0, mixed)], 20),
  // A raw chunk whose last sector is partial; the trailer claims more sectors than the chunks cover.
  'partial.dmg': buildDmg(raw, [mishBlock(0, [{ type: UDRW, sector: 0, sectorCount: 4, offset: 0, length: raw.length - 100 }])], 4),
  // Chunks that overlap: qemu's binary search starts one past the last chunk, so sectors 4-11
  // come from the zero chunk, not the raw one before it (a fuzz finding).
  'overlap.dmg': buildDmg(sectors(12, 3), [
    mishBlock(0, [
      { type: UDRW, sector: 0, sectorCount: 4, offset: 0, length: 2048 },
      { type: UDRW, sector: 4, sectorCount: 8, offset: 2048, length: 4096 },
      { type: UDZE, sector: 4, sectorCount: 8, offset: 0, length: 0 },
      { type: UDZE, sector: 12, sectorCount: 4, offset: 0, length: 0 },
    ]),
  ], 16),
  // '=' inside the base64 text: a zero digit to glib, whose group yields fewer bytes.
  'b64-equals.dmg': plistWithInsert('A=AA', 52),
  // Sizes past 2^53 (qemu opens up to BDRV_MAX_LENGTH, 2^63 - 2^30): 2^61 and the maximum.
  'size-2^61.dmg': buildDmg(fork, [mishBlock(0, mixed)], 1n << 52n),
  'size-max.dmg': buildDmg(fork, [mishBlock(0, mixed)], ((1n << 63n) - (1n << 30n)) / 512n),
  // A huge zero chunk (zero chunks are never buffered).
  'big-zero.dmg': buildDmg(raw, [mishBlock(0, [{ type: UDZE, sector: 0, sectorCount: 1n << 18n, offset: 0, length: 0 }])], 1n << 18n),
  // bzip2, lzfse and unknown chunks are left out of the table (qemu warns), the rest reads.
  'modules.dmg': buildDmg(fork, [
    mishBlock(0, [
      mixed[0],
      { type: UDBZ, sector: 4, sectorCount: 8, offset: raw.length, length: z.length },
      { type: ULFO, sector: 12, sectorCount: 8, offset: raw.length, length: z.length },
      { type: 0x1234, sector: 20, sectorCount: 8, offset: raw.length, length: z.length },
    ]),
  ], 28),
};

const hostileOpen: Record<string, Buffer> = {
  'tiny.dmg': Buffer.from('koly'),
  'no-koly.dmg': Buffer.alloc(2048),
  'data-fork-past.dmg': buildDmg(fork, [mishBlock(0, mixed)], 20, { dataForkOffset: 1n << 40n }),
  'rsrc-past.dmg': buildDmg(fork, [mishBlock(0, mixed)], 20, { rsrcForkOffset: 100n, rsrcForkLength: 1n << 40n }),
  'xml-past.dmg': buildDmg(fork, [mishBlock(0, mixed)], 20, { xmlOffset: 1n << 62n }),
  'xml-huge.dmg': Buffer.concat([Buffer.alloc(17 * 1024 * 1024), koly({ xmlOffset: 0n, xmlLength: 17n * 1024n * 1024n, sectorCount: 8n })]),
  'no-tables.dmg': Buffer.concat([fork, koly({ sectorCount: 8n })]),
  // Tables without usable chunks open (qemu then crashes on reads; see the test below).
  'no-chunks.dmg': buildDmg(fork, [mishBlock(0, [{ type: UDCM, sector: 0, sectorCount: 0, offset: 0, length: 0 }])], 8),
  'not-mish.dmg': buildDmg(fork, [mishBlock(0, mixed, { magic: 'mush' })], 20),
  'sectors-negative.dmg': buildDmg(fork, [mishBlock(0, mixed)], 1n << 63n),
  // One sector past BDRV_MAX_LENGTH, and its largest wrap-around in 64 bits: qemu's refresh error.
  'sectors-past-max.dmg': buildDmg(fork, [mishBlock(0, mixed)], ((1n << 63n) - (1n << 30n)) / 512n + 1n),
  'sectors-wrap-high.dmg': buildDmg(fork, [mishBlock(0, mixed)], (1n << 55n) - 1n),
  // An XML declaration spliced into the base64 text (fuzz finding: its '=' shift the decoding,
  // and qemu then refuses a chunk's sector count).
  // '==' shifts the entries by 12 bits: no chunk type is known any more (qemu's reads then crash).
  'b64-equals-pair.dmg': plistWithInsert('==', 8),
  'b64-spliced.dmg': plistWithInsert('<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE plist PUBLIC "-', 200),
  'count-max.dmg': one(UDZO, 131073, 10),
  'length-max.dmg': one(UDZO, 8, 64 * 1024 * 1024 + 1),
  'malformed-xml.dmg': (() => {
    const xml = Buffer.from('<plist><data>AAAA');
    return Buffer.concat([fork, xml, koly({ xmlOffset: BigInt(fork.length), xmlLength: BigInt(xml.length), sectorCount: 8n })]);
  })(),
  // A resource whose size runs past the resource data.
  'rsrc-overrun.dmg': (() => {
    const header = Buffer.alloc(256);
    header.writeUInt32BE(256, 0);
    header.writeUInt32BE(8, 8);
    const res = Buffer.alloc(8);
    res.writeUInt32BE(1000, 0);
    const f = Buffer.concat([header, res]);
    return Buffer.concat([fork, f, koly({ rsrcForkOffset: BigInt(fork.length), rsrcForkLength: BigInt(f.length), sectorCount: 8n })]);
  })(),
};

const hostileRead: Record<string, Buffer> = {
  'zlib-short.dmg': one(UDZO, 8, z.length - 20, raw.length),
  'zlib-wrong-size.dmg': one(UDZO, 4, z.length, raw.length),
  'zlib-garbage.dmg': one(UDZO, 8, 100, 0),
  'hole.dmg': buildDmg(fork, [mishBlock(0, [mixed[0], { ...mixed[2], sector: 6 }])], 14),
  // Sectors 3 to 7 are in no chunk: reading them fails.
  'raw-inconsistent.dmg': one(UDRW, 3, 4 * 512),
  // A raw chunk longer than its sectors: only its sectors are used.
  'raw-long.dmg': one(UDRW, 8, 12 * 512),
  'no-chunks-read.dmg': buildDmg(fork, [mishBlock(0, [mixed[0]])], 8),
  'raw-past-eof.dmg': one(UDRW, 8, 4096, 1n << 30n),
  // 64 MiB promised, a stream that inflates to 1 GiB: cut at the chunk size.
  'bomb.dmg': (() => {
    const bomb = deflateSync(Buffer.alloc(1024 * 1024 * 1024));
    return buildDmg(bomb, [mishBlock(0, [{ type: UDZO, sector: 0, sectorCount: 2048, offset: 0, length: bomb.length }])], 2048);
  })(),
};

before(() => {
  for (const [name, bytes] of Object.entries({ ...good, ...hostileOpen, ...hostileRead })) writeFileSync(images.path(name), bytes);
});
after(() => images.remove());

/**
 * The oracle's stderr without the open-time lines instar does not print (see the header), and
 * without qemu's error_report line before an open failure: instar's error carries it (`reports`)
 * but the host does not print it yet.
 */
function withoutWarnings(stderr: string): string {
  return stderr
    .split('\n')
    .filter((l) => !l.startsWith('qemu: module block-block-dmg-'))
    .join('\n');
}

interface Want {
  version: OracleVersion;
  stdout: string;
  stderr: string;
  status: number | null;
  data?: Buffer;
}

function oracleSays(args: string[], version: OracleVersion, out?: string): Want {
  const want = runQemu(version, out ? [...args, `q${version}-${out}`] : args, { cwd: images.dir, timeoutMs: 60_000 });
  const data = out && want.status === 0 ? readFileSync(images.path(`q${version}-${out}`)) : undefined;
  return { version, stdout: want.stdout, stderr: withoutWarnings(want.stderr), status: want.status, data };
}

function instarSays(args: string[], want: Want, opts: { sandboxed?: boolean; out?: string }): void {
  const { version } = want;
  const iArgs = opts.out ? [...args, `i${version}-${opts.out}`] : args;
  const t = Date.now();
  const got = runInstar([...iArgs, '--qemu-version', version, ...(opts.sandboxed ? [] : ['--sandbox=none'])], { cwd: images.dir, timeoutMs: 60_000 });
  assert.ok(Date.now() - t < 30_000, 'bounded time');
  const label = `qemu-img ${version} ${args.join(' ')}`;
  assert.equal(got.stdout, want.stdout, `${label}: stdout`);
  assert.equal(got.stderr, want.stderr, `${label}: stderr`);
  assert.equal(got.status, want.status, `${label}: status`);
  if (want.data) assert.ok(readFileSync(images.path(`i${version}-${opts.out}`)).equals(want.data), `${label}: data`);
}

let cases = 0;
/**
 * `same` for both versions. Both oracles always run; instar (~0.3 s of CPU a launch) runs under
 * both profiles in the long tier, and in the short tier under both only where the oracles answer
 * differently (a version-specific answer), else under one, alternating from case to case: the two
 * profiles take the same dmg code wherever qemu's answers agree.
 */
function sameBoth(args: string[], opts: { sandboxed?: boolean; out?: string } = {}): void {
  const wants = VERSIONS.map((v) => oracleSays(args, v, opts.out));
  const [a, b] = wants;
  const agree = a.stdout === b.stdout && a.stderr === b.stderr && a.status === b.status && (a.data === undefined) === (b.data === undefined) && (!a.data || a.data.equals(b.data!));
  const k = cases++ % 2;
  for (const want of LONG || !agree ? wants : [wants[k]]) instarSays(args, want, opts);
}

/**
 * Short tier: the human info and map forms print what the --output=json forms print (the same
 * size and extents, in the generic renderers), so they run on mixed.dmg and the size-* edges (huge
 * sizes in human units) only; the json forms on every file.
 */
const HUMAN_FORMS = (file: string) => LONG || file === 'mixed.dmg' || file.startsWith('size-');
/** Short tier: these differ from mixed.dmg only in how the same table is stored (map and info show it read alike): their data is mixed.dmg's. */
const CONVERTED = tiered(Object.keys(good), (file) => !['rsrc.dmg', 'odd.dmg', 'b64-equals.dmg'].includes(file));
for (const file of Object.keys(good)) {
  for (const args of [['info', file], ['info', '--output=json', file], ['map', '--output=json', '-f', 'dmg', file], ['map', file]]) {
    if (!args.includes('--output=json') && !HUMAN_FORMS(file)) continue;
    test(`dmg ${args.join(' ')}`, () => sameBoth(args, { sandboxed: file === 'mixed.dmg' }));
  }
  // (The 2^61-byte and larger disks are not converted: qemu fails creating such a raw file.)
  if (!file.startsWith('size-') && CONVERTED.includes(file)) test(`dmg convert -O raw ${file}`, () => sameBoth(['convert', '-O', 'raw', file], { out: `${file}.raw` }));
}
test('dmg convert -O raw mixed.dmg (sandboxed)', () => sameBoth(['convert', '-O', 'raw', 'mixed.dmg'], { out: 'sb.raw', sandboxed: true }));
test('dmg: reads of a table without chunks fail with EIO (qemu 7.2 and 10.0 crash)', () => {
  for (const file of ['no-chunks.dmg', 'not-mish.dmg']) {
    const r = runInstar(['convert', '-f', 'dmg', '-O', 'raw', file, 'x.raw'], { cwd: images.dir });
    assert.equal(r.stderr, 'qemu-img: error while reading at byte 0: Input/output error\n');
    assert.equal(r.status, 1);
  }
});

test('dmg: a sector count whose byte size passes int64 opens, and each size query fails in its command\'s words', () => {
  // 2^60 sectors: 2^69 bytes, wrapping to 0 (formats/sector-count.ts); 2^55 + 16: wraps to 8 KiB.
  writeFileSync(images.path('sectors-efbig.dmg'), buildDmg(fork, [mishBlock(0, mixed)], 1n << 60n));
  writeFileSync(images.path('sectors-wrap.dmg'), buildDmg(fork, [mishBlock(0, mixed)], (1n << 55n) + 16n));
  for (const file of ['sectors-efbig.dmg', 'sectors-wrap.dmg']) {
    for (const args of [['info', '-f', 'dmg', file], ['map', '--output=json', '-f', 'dmg', file], ['compare', '-f', 'dmg', '-F', 'dmg', 'mixed.dmg', file]]) {
      sameBoth(args, { sandboxed: true });
    }
  }
});

for (const file of Object.keys(hostileOpen)) {
  test(`dmg info on hostile ${file}`, () => sameBoth(['info', '-f', 'dmg', file], { sandboxed: true }));
}
for (const file of Object.keys(hostileRead)) {
  test(`dmg convert of hostile ${file}`, () => sameBoth(['convert', '-f', 'dmg', '-O', 'raw', file], { out: `${file}.raw`, sandboxed: file === 'bomb.dmg' }));
}

test('dmg detection: the ".dmg" name scores 2; the same bytes under another name are not dmg', () => {
  writeFileSync(images.path('mixed.img'), good['mixed.dmg']);
  sameBoth(['info', 'mixed.dmg']);
  const r = runInstar(['info', 'mixed.img', '--sandbox=none'], { cwd: images.dir });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /DMG image \(use -f dmg\)/);
});

test('dmg: a plist of many mish blocks with a million chunk entries opens in bounded time', () => {
  const entries: ChunkEntry[] = Array.from({ length: 200_000 }, (_, i) => ({ type: UDZE, sector: i, sectorCount: 1, offset: 0, length: 0 }));
  writeFileSync(images.path('many.dmg'), buildDmg(Buffer.alloc(0), [mishBlock(0, entries)], 200_000));
  sameBoth(['info', 'many.dmg']);
  sameBoth(['convert', '-O', 'raw', 'many.dmg'], { out: 'many.raw' });
});


test('dmg: a 300 MiB resource in a sparse file is refused fast (instar caps what qemu would allocate)', () => {
  const size = 301 * 1024 * 1024;
  const header = Buffer.alloc(260);
  header.writeUInt32BE(256, 0);
  header.writeUInt32BE(size - 1024, 8);
  header.writeUInt32BE(300 * 1024 * 1024, 256);
  const fd = openSync(images.path('huge-rsrc.dmg'), 'w');
  try {
    writeSync(fd, header, 0, header.length, 0);
    ftruncateSync(fd, size);
    writeSync(fd, koly({ rsrcForkOffset: 0n, rsrcForkLength: BigInt(size - 512), sectorCount: 8n }), 0, 512, size - 512);
  } finally {
    closeSync(fd);
  }
  const t = Date.now();
  const r = runInstar(['info', '-f', 'dmg', 'huge-rsrc.dmg'], { cwd: images.dir });
  assert.ok(Date.now() - t < 10_000);
  assert.equal(r.stderr, "qemu-img: Could not open 'huge-rsrc.dmg': Could not open 'huge-rsrc.dmg': Cannot allocate memory\n");
  assert.equal(r.status, 1);
});
