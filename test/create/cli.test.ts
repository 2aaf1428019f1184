// `create` against both oracles: the argument rules, sizes, -o checks, -o help, the backing file
// rules (probed, -u, -F, missing files, a backing file's own missing backing file) and every qcow2
// option error, each compared byte for byte (stdout, stderr, exit status, the files left behind).
import { after, before, test } from 'node:test';
import { mkdirSync } from 'node:fs';
import { ImageDir } from '../differential/harness.ts';
import { VERSIONS } from '../helpers/oracles.ts';
import { compareSides, pool, runSide } from './harness.ts';

const template = new ImageDir('create-cli');

before(() => {
  template.img('create', '-q', '-f', 'raw', 'base.raw', '64k');
  template.img('create', '-q', '-f', 'raw', 'odd.raw', '1000');
  template.img('create', '-q', '-f', 'qcow2', 'base.q', '5M');
  template.img('create', '-q', '-f', 'qcow2', '-u', '-b', 'missing', '-F', 'qcow2', 'mid.q', '1M');
  mkdirSync(template.path('sub'));
  template.img('create', '-q', '-f', 'qcow2', 'sub/b.q', '2M');
});
after(() => template.remove());

const CASES: string[][] = [
  // Arguments and sizes.
  ['create'], ['create', 'f'], ['create', 'f', '1X'], ['create', 'f', '8E'], ['create', 'f', '9E'], ['create', 'f', '1.5'],
  ['create', 'f', '1.5M'], ['create', 'f', '0x10'], ['create', 'f', '0x1k'], ['create', 'f', '1000'], ['create', 'f', '0'],
  ['create', 'f', '1M', 'extra'], ['create', '-q', 'f', '1k'], ['create', 'f', '', '1'],
  // Formats and -o.
  ['create', '-f', 'foo', 'f', '1M'], ['create', '-f', 'bochs', 'f', '1M'], ['create', '-f', 'raw', '-o', 'bogus=1', 'f', '1M'],
  ['create', '-f', 'qcow2', '-o', 'bogus=1', 'f', '1M'], ['create', '-f', 'raw', '-o', 'size=abc', 'f'], ['create', '-f', 'raw', '-o', 'size=-1', 'f'],
  ['create', '-f', 'raw', '-o', 'size=1M', 'f'], ['create', '-f', 'raw', '-o', 'size=1M', 'f', '2M'], ['create', '-f', 'qcow2', '-o', ',size=1M', 'f'],
  ['create', '-f', 'qcow2', '-o', 'size=1M,size=2M', 'f'], ['create', '-f', 'qcow2', '-o', 'size=1M', '-o', 'cluster_size=4k', 'f'],
  ['create', '-f', 'raw', '-o', 'preallocation=bad', 'f', '1M'], ['create', '-f', 'raw', '-o', 'preallocation=full', 'f', '1M'],
  ['create', '-f', 'raw', '-o', 'preallocation=falloc', 'f', '100k'], ['create', '-f', 'raw', '-o', 'preallocation=off,nocow=on,extent_size_hint=2M', 'f', '1M'],
  ['create', '-f', 'raw', '-o', 'size=18446744073709551614', 'f'], ['create', '-f', 'raw', '-o', 'size=18446744073709551615', 'f'],
  ['create', '-f', 'qcow2', '-o', 'nohelp', 'f', '1M'],
  ['create', '-f', 'qcow2', '-o', 'refcount_bits=0x10,lazy_refcounts=yes,cluster_size=0x10000,nocow=y,compat=v3,backing_file=a,,b,size=1M,backing_fmt=raw', '-u', 'f'],
  // -o help.
  ['create', '-o', 'help'], ['create', '-f', 'qcow2', '-o', 'help'], ['create', '-f', 'qcow2', '-o', 'help', 'f'],
  ['create', '-f', 'raw', '-o', '?', 'f'], ['create', '-f', 'foo', '-o', 'help'], ['create', '-f', 'bochs', '-o', 'help'],
  ['create', '-f', 'qcow2', '-o', 'size=1M,?', 'f', '1X'],
  // Backing files.
  ['create', '-f', 'qcow2', '-b', 'nope', '-F', 'raw', 'f'], ['create', '-f', 'qcow2', '-b', 'nope', 'f', '1M'],
  ['create', '-f', 'qcow2', '-u', '-b', 'nope', '-F', 'raw', 'f', '1M'], ['create', '-f', 'qcow2', '-u', '-b', 'nope', 'f', '1M'],
  ['create', '-f', 'qcow2', '-u', '-b', 'nope', '-F', 'foo', 'f', '1M'], ['create', '-f', 'qcow2', '-b', 'base.raw', '-F', 'qcow2', 'f'],
  ['create', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', 'f'], ['create', '-f', 'qcow2', '-b', 'odd.raw', '-F', 'raw', 'f'],
  ['create', '-f', 'qcow2', '-b', 'base.raw', '-F', 'foo', 'f'], ['create', '-f', 'qcow2', '-b', 'base.raw', 'f'], ['create', '-f', 'qcow2', '-b', 'base.q', 'f'],
  ['create', '-f', 'qcow2', '-b', 'base.q', '-F', 'qcow2', 'f'], ['create', '-f', 'qcow2', '-b', 'base.q', '-F', 'raw', 'f', '1G'],
  ['create', '-f', 'qcow2', '-b', 'mid.q', '-F', 'qcow2', 'f'], ['create', '-f', 'qcow2', '-b', 'mid.q', '-F', 'raw', 'f'],
  ['create', '-f', 'qcow2', '-o', 'backing_file=base.q,backing_fmt=qcow2', 'f'], ['create', '-f', 'qcow2', '-b', 'base.q', '-F', 'qcow2', '-o', 'backing_file=x,backing_fmt=raw', 'f'],
  ['create', '-f', 'qcow2', '-b', 'b.q', '-F', 'qcow2', 'sub/top.q'], ['create', '-f', 'qcow2', '-b', 'f', '-F', 'raw', 'f'],
  ['create', '-f', 'qcow2', '-b', '', '-F', 'raw', 'f'], ['create', '-f', 'qcow2', '-F', 'raw', 'f', '1M'], ['create', '-f', 'raw', '-b', 'base.raw', '-F', 'raw', 'f'],
  ['create', '-f', 'raw', '-F', 'raw', 'f', '1M'], ['create', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', '-o', 'preallocation=metadata', 'f'],
  // qcow2 option errors (qemu's QAPI conversion, then qcow2_co_create's checks).
  ...['compat=0.9', 'cluster_size=1000', 'cluster_size=256', 'cluster_size=4M', 'refcount_bits=3', 'refcount_bits=128', 'compat=0.10,refcount_bits=8',
    'compression_type=foo', 'compat=0.10,compression_type=zstd', 'compat=0.10,lazy_refcounts=on', 'extended_l2=on,cluster_size=4k',
    'compat=0.10,extended_l2=on', 'compat=0.10,data_file=x', 'data_file_raw=on', 'preallocation=foo', 'lazy_refcounts=maybe',
    'refcount_bits=x', 'cluster_size=x'].map((o) => ['create', '-f', 'qcow2', '-o', o, 'f', '1M']),
  ['create', '-f', 'qcow2', 'f', '4P'], ['create', '-f', 'qcow2', '-o', 'cluster_size=512', 'f', '1T'],
  ['create', '-f', 'qcow2', '-o', 'size=9223372036854775808', 'f'], ['create', '-f', 'raw', 'nodir/f', '1M'], ['create', '-f', 'qcow2', 'nodir/f', '1M'],
  ['create', '-f', 'raw', '.', '1M'],
  // The file protocol named as the format.
  ['create', '-f', 'file', 'f', '1M'], ['create', '-f', 'file', '-o', 'help'], ['create', '-f', 'file', '-o', '?', 'f'],
  ['create', '-f', 'file', '-o', 'preallocation=full,nocow=on,extent_size_hint=1M', 'f', '1M'], 
  ['create', '-f', 'file', '-b', 'base.raw', '-F', 'raw', 'f'], ['create', '-f', 'qcow2', '-b', 'base.raw', '-F', 'file', 'f'],
];

test('create: messages, exit statuses and files match qemu-img 7.2 and 10.0', async () => {
  const tasks = CASES.flatMap((args) => VERSIONS.map((version) => async () => {
    // A few cases go through the real sandbox, the rest in-process.
    const sandboxed = args.includes('mid.q') || args.includes('sub/top.q');
    const [expected, actual] = await Promise.all([runSide('qemu', version, template.dir, args), runSide('instar', version, template.dir, args, sandboxed)]);
    return compareSides(`${version} ${args.join(' ')}`, expected, actual);
  }));
  const problems = (await pool(tasks)).flat();
  if (problems.length > 0) throw new Error(problems.join('\n'));
});
