// convert -O qcow2 against both oracles: the output file is byte-identical to qemu-img's for every
// layout option qcow2 create takes (qemu writes in ascending order, so its allocation is
// deterministic), from sources of several formats; messages, statuses and progress are qemu's;
// a failing convert leaves no file. Bulk cases run in-process, a few through the real sandbox.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { qemu, runTool, scratch } from './harness.ts';
import { sameAsOraclesAsync } from './same-in-process.ts';
import { prng } from '../helpers/xorshift.ts';
import { VERSIONS } from '../helpers/oracles.ts';
import { longTest } from '../helpers/long.ts';

const work = scratch();
const dir = work.dir;

/** A raw disk of an odd size (not a cluster multiple): data, text, zeros and a few scattered sectors. */
function rawSource(path: string, size: number, seed: number): void {
  const next = prng(seed);
  const buf = Buffer.alloc(size);
  for (let off = 0; off < size; off += 65536) {
    const kind = next() % 5;
    const end = Math.min(size, off + 65536);
    if (kind === 0) for (let i = off; i + 4 <= end; i += 4) buf.writeUInt32LE(next(), i);
    else if (kind === 1) buf.write(`qcow2 writer test ${off}\n`.repeat(2000), off, end - off, 'latin1');
    else if (kind === 2) buf.writeUInt32LE(next(), off + 4096 * (next() % 16));
  }
  buf.fill(7, size - 1000);
  writeFileSync(path, buf);
}

before(() => {
  rawSource(join(dir, 'src.raw'), 6 * 1024 * 1024 + 3000, 11);
  rawSource(join(dir, 'small.raw'), 2 * 1024 * 1024 + 700 * 1024 + 1500, 12);
  qemu(['create', '-f', 'qcow2', 'base.qcow2', '8M'], dir);
  qemu(['-c', 'write -P 1 0 1M', '-c', 'write -P 2 5M 64k', 'base.qcow2'], dir, '10.0', 'qemu-io');
  qemu(['create', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'top.qcow2'], dir);
  qemu(['-c', 'write -P 3 512k 1M', '-c', 'write -z 5M 32k', 'top.qcow2'], dir, '10.0', 'qemu-io');
  qemu(['snapshot', '-c', 'snap1', 'top.qcow2'], dir);
  qemu(['-c', 'write -P 9 0 64k', 'top.qcow2'], dir, '10.0', 'qemu-io');
  qemu(['convert', '-f', 'raw', '-O', 'vmdk', 'src.raw', 'src.vmdk'], dir);
  qemu(['convert', '-f', 'raw', '-O', 'vpc', 'src.raw', 'src.vpc'], dir);
  writeFileSync(join(dir, 'zeros.raw'), Buffer.alloc(256 * 1024));
});
after(() => work.cleanup());

// Layouts and sources: instar runs under one profile per case, alternating (the oracles write the
// same files; their messages are compared in the last group).
describe('convert -O qcow2: the file is byte-identical to qemu-img convert', () => {
  // [options, source]: the small source where qemu's own synced writes make a case slow.
  const layouts: [string, string][] = [
    ['', 'src.raw'], ['cluster_size=512', 'src.raw'], ['cluster_size=2M', 'src.raw'], ['cluster_size=1k,refcount_bits=2', 'src.raw'],
    ['compat=0.10', 'src.raw'], ['extended_l2=on,cluster_size=16k', 'src.raw'], ['lazy_refcounts=on,compression_type=zstd', 'src.raw'],
    ['data_file=x.data', 'src.raw'], ['data_file=x.data,data_file_raw=on', 'small.raw'], ['preallocation=metadata', 'small.raw'],
    ['preallocation=full', 'small.raw'],
    // The refcount table (64 entries of blocks of 64 refcounts) outgrows its cluster: qemu moves it.
    ['cluster_size=512,refcount_bits=64', 'src.raw'], ['cluster_size=512,refcount_bits=64,preallocation=metadata', 'small.raw'],
    // Preallocated extended L2 entries: the subclusters written get their allocation bits.
    ['extended_l2=on,preallocation=metadata', 'small.raw'], ['extended_l2=on,cluster_size=16k,preallocation=full', 'small.raw'],
  ];
  for (const [i, [o, source]] of layouts.entries()) {
    test(`${source}, -o '${o}'`, async () => {
      await sameAsOraclesAsync(dir, ['convert', '-f', 'raw', '-O', 'qcow2', ...(o ? ['-o', o] : []), `../${source}`, 'out.qcow2'], { label: `layout${i}`, profiles: [VERSIONS[i % 2]] });
    });
  }
  const sources: [string, string[]][] = [
    ['a qcow2 with a backing chain', ['../top.qcow2']],
    ['an internal snapshot (-l)', ['-l', 'snap1', '../top.qcow2']],
    ['vmdk', ['../src.vmdk']],
    ['vpc', ['../src.vpc']],
    ['three sources concatenated', ['../src.vpc', '../top.qcow2', '../src.vmdk']],
    ['-S 0 (zeros written)', ['-S', '0', '../src.vpc']],
    ['-S 64k, -q', ['-S', '64k', '-q', '../top.qcow2']],
  ];
  for (const [i, [name, args]] of sources.entries()) {
    test(`from ${name}`, async () => {
      await sameAsOraclesAsync(dir, ['convert', '-O', 'qcow2', ...args, 'out.qcow2'], { label: `source${i}`, profiles: [VERSIONS[(i + 1) % 2]] });
    });
  }
});

describe('convert -O qcow2 through the real sandbox', () => {
  test('-p prints qemu\'s progress lines, the file is the same', async () => {
    await sameAsOraclesAsync(dir, ['convert', '-p', '-O', 'qcow2', '-o', 'cluster_size=4k', '../top.qcow2', 'out.qcow2'], { label: 'sandbox-p', sandbox: true, profiles: ['7.2'] });
  });
  longTest('a data file', async () => {
    await sameAsOraclesAsync(dir, ['convert', '-f', 'raw', '-O', 'qcow2', '-o', 'data_file=d.raw', '../src.raw', 'out.qcow2'], { label: 'sandbox-data', sandbox: true, profiles: ['10.0'] });
  });
});

test('-c into an external data file with nothing to compress: qemu refuses even its closing empty compressed write (status 1, no message, the image kept)', async () => {
  await sameAsOraclesAsync(dir, ['convert', '-c', '-O', 'qcow2', '-o', 'data_file=d.data', '-f', 'raw', '../zeros.raw', 'out.qcow2'], { label: 'c-data-file-zeros' });
});

describe('convert -O <format>: qemu-img\'s messages, and no file left behind', () => {
  const refusals: [string, string[]][] = [
    ['a missing source', ['convert', '-O', 'qcow2', '../nonexistent', 'out.qcow2']],
    ['an unknown format', ['convert', '-O', 'nosuch', '../top.qcow2', 'out']],
    ['a format without create', ['convert', '-O', 'bochs', '../top.qcow2', 'out']],
    ['an unknown -o option', ['convert', '-O', 'qcow2', '-o', 'foo=bar', '../top.qcow2', 'out']],
    ['an empty -o list', ['convert', '-O', 'qcow2', '-o', '', '../top.qcow2', 'out']],
    ['a bad cluster size', ['convert', '-O', 'qcow2', '-o', 'cluster_size=3', '../top.qcow2', 'out']],
    ['lazy refcounts on compat 0.10', ['convert', '-O', 'qcow2', '-o', 'compat=0.10,lazy_refcounts=on', '../top.qcow2', 'out']],
    ['-c into vpc', ['convert', '-c', '-O', 'vpc', '../top.qcow2', 'out']],
    ['-c with preallocation', ['convert', '-c', '-O', 'qcow2', '-o', 'preallocation=metadata', '../top.qcow2', 'out']],
    ['-B without a backing format', ['convert', '-O', 'qcow2', '-B', 'base.qcow2', '../top.qcow2', 'out']],
    ['-B into vdi', ['convert', '-O', 'vdi', '-B', 'base.qcow2', '../top.qcow2', 'out']],
    ['a backing file with two sources', ['convert', '-O', 'qcow2', '-B', 'x', '-F', 'raw', '../top.qcow2', '../src.vpc', 'out']],
    // The checks after qemu's getopt loop, in its order.
    ['-C with -c', ['convert', '-C', '-c', '-S', '4k', '-O', 'qcow2', '../top.qcow2', 'out']],
    ['-C with -S', ['convert', '-C', '-S', '4k', '--salvage', '-O', 'qcow2', '../top.qcow2', 'out']],
    ['--skip-broken-bitmaps alone', ['convert', '--skip-broken-bitmaps', '-C', '-c', '-O', 'qcow2', '../top.qcow2', 'out']],
    ['-n with -o', ['convert', '-n', '-o', 'cluster_size=4k', '--target-is-zero', '-O', 'qcow2', '../top.qcow2', 'out']],
    ['--bitmaps with two sources', ['convert', '--bitmaps', '-O', 'qcow2', '../top.qcow2', '../src.vpc', 'out']],
    // qemu's write lock: nothing the sources opened is created over (truncated).
    ['the target is the source', ['convert', '-O', 'qcow2', '../top.qcow2', '../top.qcow2']],
    ['the target is the source\'s backing file', ['convert', '-O', 'qcow2', '../top.qcow2', '../base.qcow2']],
    ['the data file is the source', ['convert', '-O', 'qcow2', '-o', 'data_file=../src.vpc', '../src.vpc', 'out']],
  ];
  // The long tier takes the refusals whose kind another case covers already (test time).
  const longOnly = new Set(['a format without create', 'an empty -o list', 'lazy refcounts on compat 0.10', '-c with preallocation', '-B into vdi', '-C with -S', '--skip-broken-bitmaps alone']);
  for (const [i, [name, args]] of refusals.entries()) {
    (longOnly.has(name) ? longTest : test)(name, async () => {
      // Every refusal under both profiles would double the time: the first few, then alternating.
      const profiles = i < 2 ? VERSIONS : [VERSIONS[i % 2]];
      const sources = ['top.qcow2', 'base.qcow2', 'src.vpc'].map((name) => readFileSync(join(dir, name)));
      for (const ours of await sameAsOraclesAsync(dir, args, { label: `refusal${i}`, profiles })) assert.deepEqual([...ours.files.keys()], []);
      ['top.qcow2', 'base.qcow2', 'src.vpc'].forEach((name, n) => assert.ok(readFileSync(join(dir, name)).equals(sources[n]), `${name} untouched`));
    });
  }

  test('-o help prints the create options (before any source is opened)', async () => {
    await sameAsOraclesAsync(dir, ['convert', '-O', 'qcow2', '-o', 'help', '../nonexistent', 'out'], { label: 'help', profiles: ['10.0'] });
    // The default output format, raw, too.
    await sameAsOraclesAsync(dir, ['convert', '-o', 'help', '../nonexistent', 'out'], { label: 'help-raw', profiles: ['7.2'] });
  });

  test('a bad -t: qemu has created the image and leaves it', async () => {
    await sameAsOraclesAsync(dir, ['convert', '-t', 'bogus', '-O', 'qcow2', '../top.qcow2', 'out.qcow2'], { label: 'cache', profiles: ['7.2'] });
  });

  test('a read error in the middle of the copy: qemu\'s message, and instar removes what it created', async () => {
    qemu(['convert', '-f', 'raw', '-O', 'qcow2', '-c', 'src.raw', 'broken.qcow2'], dir);
    // Corrupt the first compressed cluster's stream: qemu's read of it fails (EIO).
    const r = runTool('10.0', dir, 'locate', ['map', '--output=json', '../broken.qcow2']);
    const map = JSON.parse(r.result.stdout) as { start: number; compressed?: boolean }[];
    const firstCompressed = map.find((e) => e.compressed);
    assert.ok(firstCompressed, 'the source has a compressed cluster');
    corruptCompressed(join(dir, 'broken.qcow2'), firstCompressed.start);
    const outs = await sameAsOraclesAsync(dir, ['convert', '-O', 'qcow2', '-o', 'data_file=d.raw', '../broken.qcow2', 'out.qcow2'], { label: 'readerror', files: false, profiles: ['10.0'] });
    for (const ours of outs) {
      assert.match(ours.result.stderr, /error while reading at byte \d+: Input\/output error/);
      assert.deepEqual(readdirSync(ours.dir), []);
    }
  });
});

/** Overwrites the start of the compressed stream of the guest cluster at `guest` (64 KiB clusters). */
function corruptCompressed(path: string, guest: number): void {
  const buf = readFileSync(path);
  const l1 = Number(buf.readBigUInt64BE(40));
  const l2 = Number(buf.readBigUInt64BE(l1) & (2n ** 62n - 1n));
  const entry = buf.readBigUInt64BE(l2 + (guest / 65536) * 8);
  const host = Number(entry & (2n ** 54n - 1n));
  buf.fill(0xff, host, host + 8);
  writeFileSync(path, buf);
}
