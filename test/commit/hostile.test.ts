// Hostile and unsupported inputs to commit: refused with one clear line before anything is
// written (every file of the chain, and the files the image names, keep their bytes).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runInstar, runQemu } from '../helpers/oracles.ts';
import { ImageBuilder } from './harness.ts';

const builder = new ImageBuilder();
let dir = '';

before(() => {
  dir = join(builder.root, 'cases');
  mkdirSync(join(dir, 'inside'), { recursive: true });
  const q = (args: string[], cwd = dir) => assert.equal(runQemu('7.2', args, { cwd }).status, 0, args.join(' '));
  const io = (file: string, cmds: string[], fmt = 'qcow2') =>
    assert.equal(runQemu('7.2', ['-f', fmt, ...cmds.flatMap((c) => ['-c', c]), file], { cwd: dir }, 'qemu-io').status, 0, file);
  // A top whose backing file is a system file, and one whose backing file is outside its directory.
  q(['create', '-q', '-f', 'raw', 'outside.raw', '1M']);
  q(['create', '-q', '-f', 'qcow2', '-u', '-b', '/etc/passwd', '-F', 'raw', 'inside/passwd.qcow2', '1M']);
  q(['create', '-q', '-f', 'qcow2', '-u', '-b', '../outside.raw', '-F', 'raw', 'inside/escape.qcow2', '1M']);
  io(join(dir, 'inside/passwd.qcow2'), ['write -P 1 0 4k']);
  io(join(dir, 'inside/escape.qcow2'), ['write -P 1 0 4k']);
  // A base whose L1 entry points at a misaligned L2 table.
  q(['create', '-q', '-f', 'qcow2', 'inside/bad-base.qcow2', '1M']);
  io(join(dir, 'inside/bad-base.qcow2'), ['write -P 2 0 64k']);
  q(['create', '-q', '-f', 'qcow2', '-u', '-b', 'bad-base.qcow2', '-F', 'qcow2', 'inside/bad-top.qcow2', '1M']);
  io(join(dir, 'inside/bad-top.qcow2'), ['write -P 3 0 4k']);
  const bad = readFileSync(join(dir, 'inside/bad-base.qcow2'));
  const l1 = Number(bad.readBigUInt64BE(40));
  bad.writeBigUInt64BE(bad.readBigUInt64BE(l1) + 0x200n, l1);
  writeFileSync(join(dir, 'inside/bad-base.qcow2'), bad);
  // A base with an internal snapshot whose shared last cluster the disk covers in part (qemu
  // would copy the rest on write; whole shared clusters are replaced), a compat=0.10 top
  // with an internal snapshot (committed with -d below).
  q(['create', '-q', '-f', 'qcow2', 'inside/snap-base.qcow2', '1000000']);
  io(join(dir, 'inside/snap-base.qcow2'), ['write -P 2 960k 4k']);
  q(['snapshot', '-c', 's1', 'inside/snap-base.qcow2']);
  q(['create', '-q', '-f', 'qcow2', '-b', 'snap-base.qcow2', '-F', 'qcow2', 'inside/snap-top.qcow2']);
  io(join(dir, 'inside/snap-top.qcow2'), ['write -P 3 960k 4k']);
  // A VMDK base whose flat extent is the top itself (its extents are granted for writing).
  q(['create', '-q', '-f', 'vmdk', '-o', 'subformat=monolithicFlat', 'inside/loop.vmdk', '1M']);
  q(['create', '-q', '-f', 'qcow2', '-b', 'loop.vmdk', '-F', 'vmdk', 'inside/loop-top.qcow2', '1M']);
  io(join(dir, 'inside/loop-top.qcow2'), ['write -P 3 0 4k']);
  const descriptor = join(dir, 'inside/loop.vmdk');
  writeFileSync(descriptor, readFileSync(descriptor, 'latin1').replace('"loop-flat.vmdk"', '"loop-top.qcow2"'), 'latin1');
  q(['create', '-q', '-f', 'raw', 'inside/v2-base.raw', '1M']);
  q(['create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', '-b', 'v2-base.raw', '-F', 'raw', 'inside/v2-top.qcow2', '1M']);
  io(join(dir, 'inside/v2-top.qcow2'), ['write -P 3 0 4k']);
  q(['snapshot', '-c', 's1', 'inside/v2-top.qcow2']);
});
after(() => builder.remove());

const CASES: { top: string; named: string[]; stderr: RegExp; sandboxed?: boolean }[] = [
  { top: 'passwd.qcow2', named: ['/etc/passwd'], stderr: /^qemu-img: Could not open 'passwd\.qcow2': Could not open backing file: .*\n$/, sandboxed: true },
  { top: 'escape.qcow2', named: ['../outside.raw'], stderr: /^qemu-img: Could not open 'escape\.qcow2': Could not open backing file: .*\n$/ },
  { top: 'bad-top.qcow2', named: ['bad-base.qcow2'], stderr: /^qcow2: Image is corrupt: L2 table offset 0x40200 unaligned .*\nqemu-img: Could not open 'bad-top.qcow2': Input\/output error\n$/ },
  { top: 'snap-top.qcow2', named: ['snap-base.qcow2'], stderr: /^qemu-img: instar cannot write into this qcow2 image \(a cluster to overwrite is shared with a snapshot\); nothing was written\n$/ },
  { top: 'loop-top.qcow2', named: ['loop.vmdk', 'loop-flat.vmdk'], stderr: /^qemu-img: Could not open 'loop-top\.qcow2': Could not open backing file: 'loop-top\.qcow2' is an image of this chain and cannot also be its extent \(instar's path policy\)\n$/ },
];

test('commit refuses hostile or unsupported chains before writing anything', () => {
  const cwd = join(dir, 'inside');
  for (const c of CASES) {
    const files = [c.top, ...c.named].map((n) => (n.startsWith('/') ? n : join(cwd, n)));
    const before = files.map((f) => readFileSync(f));
    const r = runInstar(['commit', '-f', 'qcow2', c.top, ...(c.sandboxed ? [] : ['--sandbox=none'])], { cwd });
    assert.equal(r.status, 1, `${c.top}: status (stderr ${r.stderr})`);
    assert.match(r.stderr, c.stderr, c.top);
    assert.equal(r.stdout, '', c.top);
    files.forEach((f, i) => assert.ok(readFileSync(f).equals(before[i]), `${c.top}: ${f} was written`));
  }
});

test('commit -d of a compat=0.10 top with a snapshot goes through (nothing to empty)', () => {
  const cwd = join(dir, 'inside');
  const r = runInstar(['commit', '-d', 'v2-top.qcow2', '--sandbox=none'], { cwd });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, 'Image committed.\n');
  assert.equal(readFileSync(join(cwd, 'v2-base.raw'))[0], 3);
});
