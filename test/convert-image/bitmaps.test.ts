// convert --bitmaps against qemu-img 7.2 and 10.0: the new image byte for byte (bitmap data,
// tables, directory, header extension and autoclear bit where qemu puts them at close), and
// every message and exit status: sources without bitmap support, inconsistent bitmaps with and
// without --skip-broken-bitmaps, targets that cannot hold bitmaps (created and kept, as qemu
// keeps them), several sources, -c, -B, -l, preallocation, hostile bitmaps. Bulk cases run
// instar in-process; a few run it through the real sandbox.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { runInstar, runQemu, VERSIONS, type OracleVersion, type RunResult } from '../helpers/oracles.ts';
import { runInProcess } from '../helpers/in-process.ts';
import { scratch, type Scratch } from './harness.ts';
import { buildSources, HOSTILE_NAMES } from './bitmaps-fixtures.ts';

let s: Scratch;

before(() => {
  s = scratch();
  buildSources(s.dir);
});
after(() => s.cleanup());

function freshDir(name: string): string {
  const dir = join(s.dir, name);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir);
  return dir;
}

const filesIn = (dir: string) => new Map(readdirSync(dir).sort().map((n) => [n, readFileSync(join(dir, n))]));

interface Case {
  /** Compare the files left behind byte for byte (false: names only, e.g. VMDK's random CID). */
  bytes?: boolean;
  /** Run instar through the real sandbox (one profile's worth of launches: 10.0 only). */
  sandbox?: boolean;
  instarOptions?: string[];
}

/** Both oracles and instar (both profiles) in fresh directories; status, stdout, stderr and files compared. */
async function same(label: string, args: string[], c: Case = {}): Promise<Map<string, Buffer>> {
  const theirs = new Map<OracleVersion, { r: RunResult; files: Map<string, Buffer> }>();
  for (const v of VERSIONS) {
    const dir = freshDir(`${label}-${v}`);
    theirs.set(v, { r: runQemu(v, args, { cwd: dir, timeoutMs: 60_000 }), files: filesIn(dir) });
  }
  let last = new Map<string, Buffer>();
  for (const v of c.sandbox ? (['10.0'] as const) : VERSIONS) {
    const dir = freshDir(`${label}-instar-${v}`);
    const argv = [`--qemu-version=${v}`, ...(c.instarOptions ?? []), ...args];
    const r = c.sandbox ? runInstar(argv, { cwd: dir, timeoutMs: 60_000 }) : await runInProcess(['--sandbox=none', ...argv], dir);
    const what = `${label} (qemu ${v}): ${args.join(' ')}`;
    const oracle = theirs.get(v)!;
    assert.equal(r.stderr, oracle.r.stderr, `stderr of ${what}`);
    assert.equal(r.stdout, oracle.r.stdout, `stdout of ${what}`);
    assert.equal(r.status, oracle.r.status, `status of ${what}`);
    const ours = filesIn(dir);
    for (const [ov, t] of theirs) {
      assert.deepEqual([...ours.keys()], [...t.files.keys()], `files of ${what} (against ${ov})`);
      if (c.bytes !== false) for (const [name, bytes] of t.files) assert.ok(bytes.equals(ours.get(name)!), `${name} differs from qemu ${ov}'s: ${what}`);
    }
    last = ours;
  }
  return last;
}

const convert = (...args: string[]) => ['convert', '--bitmaps', ...args];

describe('convert --bitmaps into a new qcow2 image', () => {
  test('bitmaps with data, a disabled one, 512-byte granules: the same file; info and check agree', async () => {
    const files = await same('data', convert('-O', 'qcow2', '../src/data.qcow2', 't.qcow2'));
    assert.ok(files.has('t.qcow2'));
    const dir = join(s.dir, 'data-instar-10.0');
    const info = runQemu('10.0', ['info', '--output=json', 't.qcow2'], { cwd: dir });
    const names = (JSON.parse(info.stdout) as { 'format-specific': { data: { bitmaps: { name: string; flags: string[] }[] } } })['format-specific'].data.bitmaps;
    assert.deepEqual(names.map((b) => `${b.name}:${b.flags.join('+')}`), ['b:auto', 'c:', 'd:auto']);
    const check = runQemu('10.0', ['check', 't.qcow2'], { cwd: dir });
    assert.equal(check.status, 0, check.stdout + check.stderr);
  });

  test('every granularity from 512 B to 2 GiB over an odd size, into 512-byte clusters with 1-bit refcounts (the refcount table grows)', async () => {
    await same('many-rc1', convert('-O', 'qcow2', '-o', 'cluster_size=512,refcount_bits=1', '../src/many.qcow2', 't.qcow2'));
  });

  test('-c: the bitmaps go after the compressed clusters and the sector alignment of the end', async () => {
    await same('many-c', convert('-c', '-O', 'qcow2', '../src/many.qcow2', 't.qcow2'));
  });

  test('multi-cluster bitmap tables, into 2 MiB clusters', async () => {
    await same('small-2m', convert('-O', 'qcow2', '-o', 'cluster_size=2M', '../src/small.qcow2', 't.qcow2'));
  });

  test('preallocation=metadata, and extended L2 entries with an external data file', async () => {
    await same('prealloc', convert('-O', 'qcow2', '-o', 'preallocation=metadata', '../src/many.qcow2', 't.qcow2'));
    await same('xl2-data', convert('-O', 'qcow2', '-o', 'extended_l2=on,data_file=t.data', '../src/many.qcow2', 't.qcow2'));
  });

  test('-l: the bitmaps are the image\'s current ones; -B over an empty backing file', async () => {
    await same('snapshot', convert('-l', 's1', '-O', 'qcow2', '../src/snap.qcow2', 't.qcow2'));
    await same('backing', convert('-B', '../src/blank.qcow2', '-F', 'qcow2', '-O', 'qcow2', '../src/full.qcow2', 't.qcow2'), { instarOptions: [`--allow-path=${join(s.dir, 'src')}`] });
  });

  test('a source without bitmaps gives an image without any', async () => {
    await same('plain', convert('-O', 'qcow2', '../src/plain.qcow2', 't.qcow2'));
  });

  test('through the real sandbox', async () => {
    await same('sandboxed', convert('-p', '-O', 'qcow2', '../src/data.qcow2', 't.qcow2'), { sandbox: true });
    await same('sandboxed-inuse', convert('-O', 'qcow2', '../src/inuse.qcow2', 't.qcow2'), { sandbox: true });
  });
});

describe('convert --bitmaps: qemu\'s refusals and warnings', () => {
  test('an inconsistent bitmap: refused before the target exists; skipped with a warning under --skip-broken-bitmaps', async () => {
    const refused = await same('inuse', convert('-O', 'qcow2', '../src/inuse.qcow2', 't.qcow2'));
    assert.equal(refused.size, 0);
    await same('inuse-skip', convert('--skip-broken-bitmaps', '-O', 'qcow2', '../src/inuse.qcow2', 't.qcow2'));
    await same('names', convert('--skip-broken-bitmaps', '-O', 'qcow2', '-o', 'cluster_size=512', '../src/names.qcow2', 't.qcow2'));
    await same('names-refused', convert('-O', 'qcow2', '../src/names.qcow2', 't.qcow2'));
    await same('inuse-quiet', convert('-q', '--skip-broken-bitmaps', '-O', 'qcow2', '../src/inuse.qcow2', 't.qcow2'));
  });

  test('sources that cannot hold bitmaps (version 2, raw), several sources', async () => {
    await same('v2-source', convert('-O', 'qcow2', '../src/v2.qcow2', 't.qcow2'));
    await same('raw-source', convert('-f', 'raw', '-O', 'qcow2', '../src/disk.raw', 't.qcow2'));
    await same('two', convert('-O', 'qcow2', '../src/data.qcow2', '../src/plain.qcow2', 't.qcow2'));
  });

  test('targets that cannot hold bitmaps are created, then refused, and stay', async () => {
    const v2 = await same('v2-target', convert('-O', 'qcow2', '-o', 'compat=0.10', '../src/data.qcow2', 't.qcow2'));
    assert.ok(v2.has('t.qcow2'));
    await same('raw-target', convert('-O', 'raw', '../src/data.qcow2', 't.raw'));
    // VMDK's CID is random: the names and the messages are compared, and the size.
    const vmdk = await same('vmdk-target', convert('-O', 'vmdk', '../src/data.qcow2', 't.vmdk'), { bytes: false });
    assert.equal(vmdk.get('t.vmdk')?.length, statSync(join(s.dir, 'vmdk-target-10.0', 't.vmdk')).size);
    // A bad -t is found first (the image is created all the same).
    await same('cache', convert('-t', 'bogus', '-O', 'raw', '../src/data.qcow2', 't.raw'));
  });

  test('a new parallels target: 7.2 refuses once it exists; 10.0 copies the disk, then fails on the first bitmap it creates (the file stays)', async () => {
    // qemu's node name (#blockNNN) changes from run to run: masked.
    const mask = (text: string) => text.replace(/#block\d+/g, '#blockN');
    for (const [label, args] of [['data', ['../src/data.qcow2']], ['inuse-skip', ['--skip-broken-bitmaps', '../src/inuse.qcow2']], ['progress', ['-p', '../src/data.qcow2']]] as const) {
      for (const v of VERSIONS) {
        const outcomes = [];
        for (const tool of ['qemu', 'instar']) {
          const dir = freshDir(`parallels-${label}-${tool}-${v}`);
          const argv = convert(...args, '-O', 'parallels', 't.parallels');
          const r = tool === 'qemu' ? runQemu(v, argv, { cwd: dir }) : await runInProcess(['--sandbox=none', `--qemu-version=${v}`, ...argv], dir);
          outcomes.push({ status: r.status, stdout: r.stdout, stderr: mask(r.stderr), file: readFileSync(join(dir, 't.parallels')) });
        }
        const [q, i] = outcomes;
        assert.deepEqual([i.status, i.stdout, i.stderr], [q.status, q.stdout, q.stderr], `${label} (${v})`);
        assert.ok(i.file.equals(q.file), `${label} (${v}): the target differs`);
        if (v === '10.0') assert.match(q.stderr, /Failed to create bitmap .*: Can't store persistent bitmaps to #blockN: Operation not supported\n$/);
      }
    }
  });

  test('-n with --bitmaps into a format without bitmaps (raw, vpc): qemu\'s refusal once the target opens, nothing written', async () => {
    await same('n-missing', convert('-n', '-O', 'raw', '../src/data.qcow2', 't.raw'));
    await same('n-two', convert('-n', '-O', 'raw', '../src/data.qcow2', '../src/plain.qcow2', 't.raw'));
    for (const [format, args] of [['raw', ['-p', '../src/data.qcow2']], ['vpc', ['-f', 'raw', '../src/disk.raw']], ['vpc', ['../src/plain.qcow2']]] as const) {
      for (const v of VERSIONS) {
        const outcomes = [];
        for (const tool of ['qemu', 'instar']) {
          const dir = freshDir(`n-${format}-${tool}-${v}`);
          runQemu('10.0', ['create', '-q', '-f', format, `t.${format}`, '4M'], { cwd: dir });
          const before = readFileSync(join(dir, `t.${format}`));
          const argv = convert('-n', ...args, '-O', format, `t.${format}`);
          const r = tool === 'qemu' ? runQemu(v, argv, { cwd: dir }) : await runInProcess(['--sandbox=none', `--qemu-version=${v}`, ...argv], dir);
          assert.ok(readFileSync(join(dir, `t.${format}`)).equals(before), `${tool} ${v} left ${format} as it was`);
          outcomes.push([r.status, r.stdout, r.stderr]);
        }
        assert.deepEqual(outcomes[1], outcomes[0], `${format} ${args.join(' ')} (${v})`);
        assert.equal(outcomes[0][2], args[0] === '-f' ? 'qemu-img: Source lacks bitmap support\n' : `qemu-img: Format driver '${format}' does not support bitmaps\n`);
      }
    }
    // Parallels: 7.2's refusal; 10.0's driver takes bitmaps, which instar does not write into it yet.
    const dir = freshDir('n-parallels');
    for (const [v, message] of [['7.2', "qemu-img: Format driver 'parallels' does not support bitmaps\n"], ['10.0', 'qemu-img: instar cannot copy bitmaps into an existing image (-n with --bitmaps) yet; nothing was written\n']] as const) {
      runQemu('10.0', ['create', '-q', '-f', 'parallels', 't.parallels', '4M'], { cwd: dir });
      const argv = convert('-n', '../src/data.qcow2', '-O', 'parallels', 't.parallels');
      if (v === '7.2') assert.equal(runQemu(v, argv, { cwd: dir }).stderr, message);
      const r = await runInProcess(['--sandbox=none', `--qemu-version=${v}`, ...argv], dir);
      assert.deepEqual([r.status, r.stderr], [1, message]);
    }
  });

  // (-n --bitmaps into a named qcow2 target: test/convert-image/into-bitmaps.test.ts.)
  test('-n with --bitmaps into a target whose format is probed (--target-image-opts without driver=) is refused by instar before anything is written', async () => {
    const dir = freshDir('no-create');
    runQemu('10.0', ['create', '-q', '-f', 'qcow2', 't.qcow2', '4M'], { cwd: dir });
    const before = readFileSync(join(dir, 't.qcow2'));
    const r = await runInProcess(['--sandbox=none', ...convert('-n', '--target-image-opts', '../src/data.qcow2', 'file.filename=t.qcow2')], dir);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /^qemu-img: instar cannot copy bitmaps into an existing image \(-n with --bitmaps\) yet; nothing was written\n$/);
    assert.ok(readFileSync(join(dir, 't.qcow2')).equals(before));
  });
});

describe('convert --bitmaps: hostile source bitmaps', () => {
  for (const name of HOSTILE_NAMES) {
    test(name, async () => {
      await same(`hostile-${name}`, convert('-O', 'qcow2', `../src/${name}.qcow2`, 't.qcow2'));
    });
  }
  test('bitmap data past instar\'s bound: a clear refusal, no target (qemu would copy it)', async () => {
    const dir = freshDir('huge');
    const r = await runInProcess(['--sandbox=none', ...convert('-O', 'qcow2', '../src/huge.qcow2', 't.qcow2')], dir);
    assert.equal(r.stderr, 'qemu-img: instar refuses this image: its bitmaps hold too much data; nothing was written\n');
    assert.equal(r.status, 1);
    assert.deepEqual(readdirSync(dir), []);
  });
});
