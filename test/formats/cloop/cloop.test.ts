// cloop: images assembled byte by byte, read by instar and by both qemu-img oracles: info, map,
// convert -O raw byte for byte; hostile headers, tables and streams refused with qemu's wording.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { deflateSync } from 'node:zlib';
import { assertSameOutput, ImageDir } from '../../differential/harness.ts';
import { runInstar, runQemu, VERSIONS } from '../../helpers/oracles.ts';
import { cliCases, cliErrorCases } from '../qcow/cli-cases.ts';
import { buildCloop, cloopHeader, patternBlock } from './build.ts';

const images = new ImageDir('cloop');

function table(values: bigint[]): Buffer {
  const b = Buffer.alloc(values.length * 8);
  values.forEach((v, i) => b.writeBigUInt64BE(v, i * 8));
  return b;
}

const good: Record<string, Buffer> = {
  'small.cloop': buildCloop(4096, [patternBlock(4096, 1), Buffer.alloc(4096), patternBlock(4096, 3)]),
  'big-blocks.cloop': buildCloop(65536, [patternBlock(65536, 5), patternBlock(65536, 6)]),
  // A stream followed by junk before the next block: qemu stops at the end of the zlib stream.
  'junk.cloop': buildCloop(1024, [{ stream: Buffer.concat([deflateSync(patternBlock(1024, 9)), Buffer.from('junk')]) }, patternBlock(1024, 2)]),
  'empty.cloop': buildCloop(512, []),
};

const bad = (blockSize: number, stream: Buffer): Buffer => buildCloop(blockSize, [patternBlock(blockSize, 1), { stream }]);

/** Open errors (info fails). */
const hostileOpen: Record<string, Buffer> = {
  'bs-odd.cloop': Buffer.concat([cloopHeader(1000, 1), table([144n, 144n])]),
  'bs-zero.cloop': Buffer.concat([cloopHeader(0, 1), table([144n, 144n])]),
  'bs-huge.cloop': Buffer.concat([cloopHeader(128 * 1024 * 1024, 1), table([144n, 144n])]),
  'nblocks-overflow.cloop': cloopHeader(512, 0xffffffff),
  'nblocks-offsets.cloop': cloopHeader(512, 0x4000000),
  'not-monotonic.cloop': Buffer.concat([cloopHeader(512, 2), table([160n, 170n, 165n])]),
  'block-too-big.cloop': Buffer.concat([cloopHeader(512, 1), table([144n, 144n + 2n ** 27n + 1n])]),
  // The table runs past EOF: the missing entries read as zeros, so the first of them goes backwards.
  'table-past-eof.cloop': Buffer.concat([cloopHeader(512, 1000), table([8144n, 8200n, 8300n])]),
  'header-truncated.cloop': cloopHeader(512, 1).subarray(0, 130),
};

/** Open succeeds, reading fails (convert errors). */
const hostileRead: Record<string, Buffer> = {
  'short-stream.cloop': bad(4096, deflateSync(patternBlock(4096, 2)).subarray(0, 50)),
  'long-stream.cloop': bad(4096, deflateSync(patternBlock(8192, 2))),
  'small-stream.cloop': bad(4096, deflateSync(patternBlock(2048, 2))),
  'garbage-stream.cloop': bad(4096, Buffer.from('this is not zlib at all')),
  // 1 MiB promised in one block, but the stream inflates to 1 GiB: a bomb, cut at the block.
  'bomb.cloop': buildCloop(1024 * 1024, [{ stream: deflateSync(Buffer.alloc(1024 * 1024 * 1024)) }]),
  // A block size times count past 2^32 sectors: qemu's uint32 sector count wraps.
  'wrap.cloop': Buffer.concat([cloopHeader(64 * 1024 * 1024, 32769), table(Array.from({ length: 32770 }, () => 262296n))]),
};

before(() => {
  for (const [name, bytes] of Object.entries({ ...good, ...hostileOpen, ...hostileRead })) writeFileSync(images.path(name), bytes);
});
after(() => images.remove());

cliCases(() => images.dir, 'cloop', Object.keys(good), { sandboxed: ['small.cloop'] });
cliCases(() => images.dir, 'cloop', ['wrap.cloop']);
cliErrorCases(() => images.dir, 'cloop', Object.keys(hostileOpen));

/** convert -O raw by instar equals each oracle's output, byte for byte (and the same errors). */
function convertMatches(file: string, sandboxed = false): void {
  for (const version of VERSIONS) {
    const want = runQemu(version, ['convert', '-f', 'cloop', '-O', 'raw', file, `q${version}-${file}.raw`], { cwd: images.dir, timeoutMs: 60_000 });
    const t = Date.now();
    const got = runInstar(['convert', '-f', 'cloop', '-O', 'raw', file, `i${version}-${file}.raw`, '--qemu-version', version, ...(sandboxed ? [] : ['--sandbox=none'])], {
      cwd: images.dir,
      timeoutMs: 60_000,
    });
    assert.ok(Date.now() - t < 30_000, 'bounded time');
    assert.equal(got.stderr, want.stderr, `${version} stderr`);
    assert.equal(got.status, want.status, `${version} status`);
    if (want.status === 0) {
      assert.ok(readFileSync(images.path(`i${version}-${file}.raw`)).equals(readFileSync(images.path(`q${version}-${file}.raw`))), `${version} data`);
    }
  }
}

for (const file of Object.keys(good)) test(`cloop convert -O raw ${file}`, () => convertMatches(file));
test('cloop convert -O raw small.cloop (sandboxed)', () => convertMatches('small.cloop', true));
for (const file of Object.keys(hostileRead).filter((f) => f !== 'wrap.cloop')) {
  test(`cloop convert of hostile ${file}`, () => convertMatches(file, file === 'bomb.cloop'));
}

test('cloop detection: the preamble scores 2, picked without -f', async () => {
  await assertSameOutput(images.dir, ['info', 'small.cloop']);
  await assertSameOutput(images.dir, ['info', '--output=json', 'bs-odd.cloop']);
});

test('cloop: a 64 MiB block whose stream inflates to 1 GiB fails fast, as qemu (first error line)', () => {
  writeFileSync(images.path('bomb64.cloop'), buildCloop(64 * 1024 * 1024, [{ stream: deflateSync(Buffer.alloc(1024 * 1024 * 1024)) }]));
  // qemu's convert reports once per parallel request; instar stops at the first.
  const want = runQemu('10.0', ['convert', '-f', 'cloop', '-O', 'raw', 'bomb64.cloop', 'q.raw'], { cwd: images.dir, timeoutMs: 60_000 });
  const t = Date.now();
  const got = runInstar(['convert', '-f', 'cloop', '-O', 'raw', 'bomb64.cloop', 'i.raw'], { cwd: images.dir, timeoutMs: 60_000 });
  assert.ok(Date.now() - t < 30_000, 'bounded time');
  assert.equal(got.status, 1);
  assert.equal(got.stderr, want.stderr.split('\n')[0] + '\n');
});
