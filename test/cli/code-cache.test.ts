// The CLI's V8 code cache (src/cli/code-cache.ts): used when it was made from this very bundle,
// ignored (the bundle compiled from scratch, the command unchanged) when it is missing, stale,
// damaged or from another V8. Behaviour only: what the loader reports and what the code does.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compileWithCache, makeCodeCache } from '../../src/cli/code-cache.ts';
import { fingerprint } from '../../src/fingerprint.ts';
import { ROOT } from '../helpers/oracles.ts';

/** The same 64-bit mix in BigInt arithmetic, to pin the hand-written WebAssembly down. */
function referencePrint(bytes: Uint8Array): string {
  const padded = new Uint8Array((bytes.length + 7) & ~7);
  padded.set(bytes);
  const view = new DataView(padded.buffer);
  const mask = (1n << 64n) - 1n;
  let h = BigInt(padded.length);
  for (let i = 0; i < padded.length; i += 8) {
    h = ((h ^ view.getBigUint64(i, true)) * 0x100000001b3n) & mask;
    h = ((h << 29n) | (h >> 35n)) & mask;
  }
  return `${bytes.length.toString(16)}-${h.toString(16)}`;
}

test('the fingerprint is the documented mix, and any changed byte changes it', () => {
  for (const n of [0, 1, 7, 8, 9, 4097, 70_000]) {
    const bytes = Uint8Array.from({ length: n }, (_, i) => (i * 131 + n) & 0xff);
    assert.equal(fingerprint(bytes), referencePrint(bytes), `${n} bytes`);
    if (n === 0) continue;
    const flipped = Uint8Array.from(bytes);
    flipped[n >> 1] ^= 0x10;
    assert.notEqual(fingerprint(flipped), fingerprint(bytes));
  }
  // A trailing zero is not the padding: the length is part of the print.
  assert.notEqual(fingerprint(Uint8Array.of(1, 2)), fingerprint(Uint8Array.of(1, 2, 0)));
});

// A bundle in the loader's shape: one function expression. Its result shows which code ran.
const sample = (answer: number, tag: string) => Buffer.from(`(function (x) { const helper = (y) => y * ${answer}; return helper(x) + 0; })\n// ${tag} caf\u00e9\n`, 'utf8');
const FILE = '/instar-test/sample.js';
const run = (source: Buffer, cache: Buffer | undefined) => {
  const { script, use } = compileWithCache(source, cache, FILE);
  return { use, value: (script.runInThisContext() as (x: number) => number)(2) };
};

/**
 * The cache made in another process, as the build makes it: made here, V8 would answer the
 * later compile of the same text from what it keeps in memory and never look at the cache.
 */
function madeElsewhere(source: Buffer): Buffer {
  const script = `import { makeCodeCache } from ${JSON.stringify(join(ROOT, 'src/cli/code-cache.ts'))};
    import { readFileSync } from 'node:fs';
    process.stdout.write(makeCodeCache(readFileSync(0), '/instar-test/build.js').toString('base64'));`;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { input: source, encoding: 'utf8', cwd: ROOT });
  assert.equal(r.status, 0, r.stderr);
  return Buffer.from(r.stdout, 'base64');
}

test('a cache made from this source is used; without one the source still compiles', () => {
  const source = sample(21, 'used');
  assert.deepEqual(run(source, madeElsewhere(source)), { use: 'used', value: 42 });
  assert.deepEqual(run(sample(21, 'missing'), undefined), { use: 'missing', value: 42 });
  const ascii = Buffer.from('(function (x) { return x + 1; })');
  assert.deepEqual(run(ascii, madeElsewhere(ascii)), { use: 'used', value: 3 });
});

test('a cache of another source of the same length is stale: the new source runs', () => {
  const cache = makeCodeCache(sample(21, 'stale'), FILE);
  // Same length, so V8's own check (the length only) would accept it.
  assert.deepEqual(run(sample(31, 'stale'), cache), { use: 'stale', value: 62 });
});

test('a damaged cache is never handed to V8 (it would crash node)', () => {
  const source = sample(21, 'damaged');
  const good = makeCodeCache(source, FILE);
  const headerEnd = good.indexOf(0x0a) + 1;
  const flipped = Buffer.from(good);
  flipped[headerEnd + ((good.length - headerEnd) >> 1)] ^= 0xff;
  for (const bad of [flipped, good.subarray(0, good.length - 9), good.subarray(headerEnd), Buffer.alloc(0), Buffer.concat([Buffer.from('instar-code-cache-1 x y z\n'), good.subarray(headerEnd)])]) {
    assert.deepEqual(run(source, bad), { use: 'corrupt', value: 42 });
  }
});

test('a cache V8 refuses (another node version: its version hash differs) costs a compile only', () => {
  const source = sample(21, 'rejected');
  const good = madeElsewhere(source);
  const data = Buffer.from(good.subarray(good.indexOf(0x0a) + 1));
  // V8's header: magic, then the version hash (bytes 4-7).
  data.writeUInt32LE(data.readUInt32LE(4) ^ 0x5a5a5a5a, 4);
  const [magic, sourcePrint] = good.toString('latin1', 0, good.indexOf(0x0a)).split(' ');
  const relabelled = Buffer.concat([Buffer.from(`${magic} ${sourcePrint} ${fingerprint(data)}\n`, 'latin1'), data]);
  assert.deepEqual(run(source, relabelled), { use: 'rejected', value: 42 });
});

/** A copy of the built CLI, so that its cache and bundle can be spoiled. */
function cliCopy(): string {
  const dir = mkdtempSync(join(tmpdir(), 'instar-code-cache-'));
  for (const name of ['cli.js', 'cli-bundle.js', 'cli-bundle.cache', 'guest.cjs', 'ops.cjs', 'package.json']) copyFileSync(join(ROOT, 'dist', name), join(dir, name));
  writeFileSync(join(dir, 'disk.raw'), Buffer.alloc(65536));
  return dir;
}

test('the built CLI: the same output whatever became of its cache, and --debug says which', (t) => {
  const dir = cliCopy();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const info = (env: Record<string, string> = {}) => {
    const r = spawnSync(join(dir, 'cli.js'), ['info', '--debug', '-f', 'raw', 'disk.raw'], { cwd: dir, encoding: 'utf8', env: { ...process.env, INSTAR_QEMU_VERSION: '10.0', ...env } });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^image: disk\.raw\nfile format: raw\nvirtual size: 64 KiB \(65536 bytes\)\n/);
    return { stdout: r.stdout, use: /debug: code cache: (\w+)\n/.exec(r.stderr)?.[1] };
  };
  const good = info();
  assert.equal(good.use, 'used');
  // The build's cache is the warm one (scripts/cli-code-cache.mjs): it holds the functions an info
  // and a convert ran, not only the bundle's top level.
  const bundleSource = readFileSync(join(dir, 'cli-bundle.js'));
  assert.ok(readFileSync(join(dir, 'cli-bundle.cache')).length > 1.5 * makeCodeCache(bundleSource, '/instar-test/plain.js').length);
  // NODE_OPTIONS may set V8 flags: V8 then refuses a cache made without them.
  assert.deepEqual(info({ NODE_OPTIONS: '--max-old-space-size=1000' }), { ...good, use: 'rejected' });

  const cacheFile = join(dir, 'cli-bundle.cache');
  const cache = readFileSync(cacheFile);
  const damaged = Buffer.from(cache);
  for (let i = cache.indexOf(0x0a) + 64; i < damaged.length; i += 4099) damaged[i] ^= 0x5a;
  writeFileSync(cacheFile, damaged);
  assert.deepEqual(info(), { ...good, use: 'corrupt' });
  rmSync(cacheFile);
  assert.deepEqual(info(), { ...good, use: 'missing' });

  // A rebuilt bundle beside an old cache: same length, different text.
  writeFileSync(cacheFile, cache);
  const bundleFile = join(dir, 'cli-bundle.js');
  const bundle = readFileSync(bundleFile, 'latin1');
  assert.ok(bundle.includes('// src/cli/main.ts'));
  writeFileSync(bundleFile, bundle.replace('// src/cli/main.ts', '// src/cli/mainXts'), 'latin1');
  assert.deepEqual(info(), { ...good, use: 'stale' });
});
