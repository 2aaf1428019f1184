// convert -O qcow2 with -c, -B/-F, -o backing_file, -W, -m and -n against both oracles. Compressed
// images need not be byte-identical (deflate implementations differ): qemu-img compare finds them
// identical, check clean, and info the same but for the disk size. With a backing file for the
// target only the source's top layer is copied, and the file is byte-identical.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { qemu, runTool, scratch } from './harness.ts';
import { sameAsOraclesAsync } from './same-in-process.ts';
import { VERSIONS, runInstar } from '../helpers/oracles.ts';
import { prng } from '../helpers/xorshift.ts';
import { maskCid } from '../writers/vpc-vmdk-harness.ts';
// Its in-process runs launch the built CLI in the long tier, which runs the files that import this.
import '../helpers/long.ts';

const work = scratch();
const dir = work.dir;

before(() => {
  // Random, text and zero blocks at 4 KiB granularity: compressible, incompressible and holes.
  const next = prng(21);
  const buf = Buffer.alloc(2 * 1024 * 1024 + 512);
  for (let off = 0; off < buf.length; off += 4096) {
    const kind = next() % 4;
    const end = Math.min(buf.length, off + 4096);
    if (kind === 0) for (let i = off; i + 4 <= end; i += 4) buf.writeUInt32LE(next(), i);
    else if (kind === 1) buf.write(`compressible ${off} `.repeat(300), off, end - off, 'latin1');
  }
  writeFileSync(join(dir, 'src.raw'), buf);
  qemu(['create', '-f', 'qcow2', 'base.qcow2', '4M'], dir);
  // Data, and data that reads as zeros (not zero by block status: qemu's write-zeroes copies it).
  qemu(['-c', 'write -P 1 0 1M', '-c', 'write -P 0 1M 64k', 'base.qcow2'], dir, '10.0', 'qemu-io');
  qemu(['create', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'top.qcow2', '8M'], dir);
  const writes = ['write -P 3 512k 64k', 'write -z 2M 128k', 'write -z 6M 128k', 'write -P 0 7M 64k', 'write -P 5 7M 1k', 'write -P 0 3M 64k'];
  qemu([...writes.flatMap((w) => ['-c', w]), 'top.qcow2'], dir, '10.0', 'qemu-io');
  // The same writes with 4 KiB clusters, and one of 4 KiB inside a cluster of the target's.
  qemu(['create', '-f', 'qcow2', '-o', 'cluster_size=4k', '-b', 'base.qcow2', '-F', 'qcow2', 'top4k.qcow2', '8M'], dir);
  const small = ['write -P 7 100k 4k', 'write -z 1M 4k', 'write -P 0 1040k 4k', 'write -z 2200k 4k', 'write -P 0 2300k 4k', 'write -z 4000k 4k'];
  qemu([...[...writes, ...small].flatMap((w) => ['-c', w]), 'top4k.qcow2'], dir, '10.0', 'qemu-io');
});
after(() => work.cleanup());

/** info as text without the lines that name the file or measure its allocation. */
const infoOf = (path: string) => qemu(['info', path]).split('\n').filter((l) => !/^(image|disk size|\s+filename|\s+file length|\s+disk size):/.test(l)).join('\n');

describe('convert -c -O qcow2: the same disk, a clean image, the same info', () => {
  const cases = ['', 'compression_type=zstd', 'cluster_size=4k,refcount_bits=1', 'extended_l2=on'];
  for (const [i, o] of cases.entries()) {
    test(`-c -o '${o}', with -p`, async () => {
      const args = ['convert', '-p', '-c', '-f', 'raw', '-O', 'qcow2', ...(o ? ['-o', o] : []), '../src.raw', 'out.qcow2'];
      const [ours] = await sameAsOraclesAsync(dir, args, { label: `c${i}`, files: false, profiles: [VERSIONS[i % 2]] });
      const mine = join(ours.dir, 'out.qcow2');
      const theirs = join(dir, `c${i}-${VERSIONS[i % 2]}-${VERSIONS[i % 2]}`, 'out.qcow2');
      assert.equal(qemu(['compare', theirs, mine]), 'Images are identical.\n');
      for (const v of VERSIONS) assert.match(qemu(['check', mine], undefined, v), /^No errors were found on the image\./);
      assert.equal(infoOf(mine), infoOf(theirs));
      assert.match(qemu(['map', '--output=json', mine]), /"compressed": true/);
    });
  }
});

describe('a backing file for the target: only the top layer is copied, byte-identical', () => {
  const cases: string[][] = [
    ['-p', '-B', '../base.qcow2', '-F', 'qcow2'],
    ['-o', 'backing_file=../base.qcow2,backing_fmt=qcow2'],
    ['-B', '../base.qcow2', '-F', 'qcow2', '-o', 'compat=0.10,cluster_size=4k'],
    ['-B', '../base.qcow2', '-F', 'raw', '-S', '0', '-o', 'extended_l2=on'],
  ];
  for (const [i, args] of cases.entries()) {
    test(args.join(' '), async () => {
      await sameAsOraclesAsync(dir, ['convert', '-O', 'qcow2', ...args, '../top.qcow2', 'out.qcow2'], { label: `b${i}`, profiles: [VERSIONS[i % 2]], instarOptions: [`--allow-path=${dir}`] });
    });
  }
  // 4 KiB source clusters under 64 KiB target clusters: qemu's copy-on-write fills the rest of a
  // cluster from the target's backing file, and its write-zeroes keeps zero clusters only where
  // the rest is zero by block status.
  for (const [i, o] of ['cluster_size=65536', 'extended_l2=on', 'compat=0.10'].entries()) {
    test(`a top layer finer than the target's clusters, -o ${o}`, async () => {
      const args = ['convert', '-O', 'qcow2', '-o', o, '-B', '../base.qcow2', '-F', 'qcow2', '../top4k.qcow2', 'out.qcow2'];
      await sameAsOraclesAsync(dir, args, { label: `cow${i}`, profiles: [VERSIONS[i % 2]], instarOptions: [`--allow-path=${dir}`] });
    });
  }
  test('-c over a backing file: whole clusters compressed, zeros as zero clusters, the same map', async () => {
    const args = ['convert', '-p', '-c', '-O', 'qcow2', '-B', '../base.qcow2', '-F', 'qcow2', '../top4k.qcow2', 'out.qcow2'];
    const [ours] = await sameAsOraclesAsync(dir, args, { label: 'bc', files: false, profiles: ['7.2'], instarOptions: [`--allow-path=${dir}`] });
    const theirs = join(dir, 'bc-7.2-7.2', 'out.qcow2');
    const mine = join(ours.dir, 'out.qcow2');
    const map = (path: string) => qemu(['map', '--output=json', path], dir).replace(/, "offset": \d+/g, '');
    assert.equal(map(mine), map(theirs));
    assert.equal(qemu(['compare', theirs, mine]), 'Images are identical.\n');
    assert.match(qemu(['check', mine]), /^No errors were found on the image\./);
  });
  test('a missing backing file: qemu\'s message (instar creates nothing)', async () => {
    const args = ['convert', '-O', 'qcow2', '-B', 'nonexistent', '-F', 'qcow2', '../top.qcow2', 'out.qcow2'];
    for (const ours of await sameAsOraclesAsync(dir, args, { label: 'b-missing', files: false })) assert.deepEqual([...ours.files.keys()], []);
  });
  test('through the real sandbox', async () => {
    await sameAsOraclesAsync(dir, ['convert', '-O', 'qcow2', '-B', '../base.qcow2', '-F', 'qcow2', '../top.qcow2', 'out.qcow2'], { label: 'b-sandbox', sandbox: true, profiles: ['10.0'], instarOptions: [`--allow-path=${dir}`] });
  });
});

describe('-W, -m, --target-is-zero and -n', () => {
  test('-W and -m: qemu may write out of order; instar writes in order, the same disk', async () => {
    const args = ['convert', '-W', '-m', '4', '-f', 'raw', '-O', 'qcow2', '../src.raw', 'out.qcow2'];
    const [ours] = await sameAsOraclesAsync(dir, args, { label: 'w', files: false, profiles: ['7.2'] });
    assert.equal(qemu(['compare', '-f', 'raw', '-F', 'qcow2', join(dir, 'src.raw'), join(ours.dir, 'out.qcow2')]), 'Images are identical.\n');
    // In order, the file is the one qemu writes without -W.
    const plain = runTool('10.0', dir, 'w-plain', ['convert', '-f', 'raw', '-O', 'qcow2', '../src.raw', 'out.qcow2']);
    assert.ok(readFileSync(join(ours.dir, 'out.qcow2')).equals(plain.files.get('out.qcow2')!));
  });
  test('-c into a qcow2 with a data file: qemu\'s write error (instar leaves no file)', async () => {
    const args = ['convert', '-c', '-f', 'raw', '-O', 'qcow2', '-o', 'data_file=d.raw', '../src.raw', 'out.qcow2'];
    for (const ours of await sameAsOraclesAsync(dir, args, { label: 'cdata', files: false, profiles: ['10.0'] })) assert.deepEqual([...ours.files.keys()], []);
  });
  test('-c into a flat VMDK (sandboxed): qemu\'s "invalid cluster size" once the image is made, which stays as made', async () => {
    for (const [i, subformat] of ['monolithicFlat', 'twoGbMaxExtentFlat'].entries()) {
      const args = ['convert', '-p', '-c', '-f', 'raw', '-O', 'vmdk', '-o', `subformat=${subformat}`, '../src.raw', 'out.vmdk'];
      const version = VERSIONS[i];
      const [ours] = await sameAsOraclesAsync(dir, args, { label: `cflat${i}`, files: false, sandbox: true, profiles: [version] });
      const theirs = runTool(version, dir, `cflat${i}-again`, args);
      assert.equal(ours.result.stderr, 'qemu-img: invalid cluster size\n');
      assert.deepEqual([...ours.files.keys()], [...theirs.files.keys()]);
      assert.equal(ours.files.size, 2);
      for (const [name, bytes] of theirs.files) assert.ok(maskCid(bytes, 'out').equals(maskCid(ours.files.get(name)!, 'out')), `${subformat}: ${name}`);
    }
  });
  test('-O qed -o table_size=1: qemu creates an image its open refuses ("Could not open"), which stays as created', async () => {
    for (const [i, o] of ['table_size=1', 'cluster_size=4096,table_size=1'].entries()) {
      const [ours] = await sameAsOraclesAsync(dir, ['convert', '-p', '-f', 'raw', '-O', 'qed', '-o', o, '../src.raw', 'out.qed'], { label: `qedt${i}`, sandbox: i === 0 });
      assert.equal(ours.result.stderr, "qemu-img: Could not open 'out.qed': QED table offset is invalid\n");
      assert.deepEqual([...ours.files.keys()], ['out.qed']);
    }
  });
  test('-O vmdk -o subformat=streamOptimized without -c: qemu copies as with -c (its driver takes only compressed writes): a grain at a time, progress too', async () => {
    for (const [i, extra] of [['-p'], ['-p', '-S', '0']].entries()) {
      const args = ['convert', ...extra, '-f', 'raw', '-O', 'vmdk', '-o', 'subformat=streamOptimized', '../src.raw', 'out.vmdk'];
      const [ours] = await sameAsOraclesAsync(dir, args, { label: `stream${i}`, files: false, profiles: [VERSIONS[i]], sandbox: i === 0 });
      assert.ok(ours.result.stdout.split('\r').length > 10, ours.result.stdout);
      assert.equal(qemu(['compare', '-f', 'raw', '-F', 'vmdk', join(dir, 'src.raw'), join(ours.dir, 'out.vmdk')]), 'Images are identical.\n');
      assert.match(qemu(['check', join(ours.dir, 'out.vmdk')]), /No errors were found/);
    }
  });
  test('-p from a mostly empty 16 GiB VMDK: block status asked grain by grain no further than each grain (was quadratic: minutes), qemu\'s progress and file', async () => {
    qemu(['create', '-q', '-f', 'vmdk', 'empty16g.vmdk', '16G'], dir);
    qemu(['-f', 'vmdk', '-c', 'write -P 5 8G 64k', 'empty16g.vmdk'], dir, '10.0', 'qemu-io');
    const started = Date.now();
    await sameAsOraclesAsync(dir, ['convert', '-p', '-O', 'qcow2', '../empty16g.vmdk', 'out.qcow2'], { label: 'vmdk16g', profiles: ['10.0'] });
    assert.ok(Date.now() - started < 30_000, `took ${Date.now() - started} ms`);
  });
  test('--target-is-zero without -n', async () => {
    await sameAsOraclesAsync(dir, ['convert', '--target-is-zero', '-O', 'qcow2', '../top.qcow2', 'out.qcow2'], { label: 'tiz' });
  });
  test('-n into an existing streamOptimized vmdk is refused clearly and leaves it untouched (qcow2: into-existing.test.ts)', async () => {
    qemu(['create', '-f', 'vmdk', '-o', 'subformat=streamOptimized', 'existing.vmdk', '8M'], dir);
    const before = readFileSync(join(dir, 'existing.vmdk'));
    const r = runInstar(['--sandbox=none', 'convert', '-n', '-O', 'vmdk', 'top.qcow2', 'existing.vmdk'], { cwd: dir });
    assert.equal(r.status, 1);
    assert.equal(r.stderr, 'qemu-img: instar cannot convert into an existing vmdk image (-n) of subformat streamOptimized yet; nothing was written\n');
    assert.ok(readFileSync(join(dir, 'existing.vmdk')).equals(before));
  });
});
