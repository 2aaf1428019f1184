// dd's copies and failures against both oracles: inputs of several formats (a qcow2 over a backing
// file, compressed clusters, vdi, vpc), windows of bs/skip/count, -O formats, outputs that cannot be
// made or already exist, a backing file missing, a cluster that fails to read. Output files compared
// byte for byte. In-process, except a few cases through the real sandbox. A backing file outside
// the allowed tree is instar's own refusal (qemu reads it).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { VERSIONS } from '../helpers/oracles.ts';
import { prng } from '../helpers/xorshift.ts';
import { instarRun, qemuRun, sameDd, tempDir } from './helpers.ts';
import { LONG } from '../helpers/long.ts';

let dir: string;
let cleanup: () => void;
const p = (name: string) => join(dir, name);

function qemu(args: string[], tool: 'qemu-img' | 'qemu-io' = 'qemu-img'): void {
  const r = tool === 'qemu-img' ? qemuRun('10.0', args) : qemuIo(args);
  if (r.status !== 0) throw new Error(`${tool} ${args.join(' ')}: ${r.stderr}`);
}
function qemuIo(args: string[]) {
  return qemuRun('10.0', args, undefined, 'qemu-io');
}

before(() => {
  ({ dir, cleanup } = tempDir('instar-dd-copy-'));
  // 1 MiB + 300 bytes: random 64 KiB blocks and zero blocks, a tail that is no whole sector.
  const next = prng(11);
  const bytes = Buffer.alloc(1024 * 1024 + 300);
  for (let off = 0; off < bytes.length; off += 65536) {
    if (next() % 3 === 0) continue;
    for (let i = off; i + 4 <= Math.min(bytes.length, off + 65536); i += 4) bytes.writeUInt32LE(next(), i);
  }
  writeFileSync(p('base.raw'), bytes);
  qemu(['convert', '-f', 'raw', '-O', 'qcow2', p('base.raw'), p('base.qcow2')]);
  qemu(['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', p('top.qcow2')]);
  qemu(['-f', 'qcow2', '-c', 'write -P 171 100k 300k', '-c', 'write -z 640k 64k', p('top.qcow2')], 'qemu-io');
  writeFileSync(p('text.raw'), 'compressible text line\n'.repeat(12000));
  qemu(['convert', '-c', '-f', 'raw', '-O', 'qcow2', p('text.raw'), p('comp.qcow2')]);
  // The same, its compressed clusters overwritten: reading them fails.
  const comp = readFileSync(p('comp.qcow2'));
  comp.fill(0xff, 0x50000);
  writeFileSync(p('bad.qcow2'), comp);
  qemu(['convert', '-f', 'raw', '-O', 'vdi', p('base.raw'), p('base.vdi')]);
  qemu(['convert', '-f', 'raw', '-O', 'vpc', p('base.raw'), p('base.vpc')]);
  qemu(['create', '-q', '-f', 'qcow2', '-u', '-b', 'gone.qcow2', '-F', 'qcow2', p('nobase.qcow2'), '1M']);
  qemu(['create', '-q', '-f', 'qcow2', '-u', '-b', '/etc/passwd', '-F', 'raw', p('evil.qcow2'), '1M']);
  mkdirSync(p('adir'));
});
after(() => cleanup());

const INPUTS: [string, string[]][] = [
  ['base.raw', ['-f', 'raw']], ['base.qcow2', []], ['top.qcow2', []], ['comp.qcow2', []], ['base.vdi', []], ['base.vpc', ['-f', 'vpc']],
];
const WINDOWS = [[], ['bs=64k', 'skip=3', 'count=12'], ['bs=1000', 'skip=7'], ['bs=4k', 'count=100'], ['bs=3k', 'skip=200', 'count=300']];

for (const version of VERSIONS) {
  test(`${version}: copies of every input and window`, async () => {
    // Short tier: every input copied whole, and one window besides per input in turn (bs/skip/count
    // are dd's own arithmetic over any input: each window on one or two inputs); long tier: all.
    for (const [k, [name, fmt]] of INPUTS.entries()) {
      const windows = LONG ? WINDOWS : [WINDOWS[0], WINDOWS[1 + (k % (WINDOWS.length - 1))]];
      for (const w of windows) await sameDd(version, [...fmt, `if=${p(name)}`, `of=${p('out.raw')}`, ...w], p('out.raw'), `${name} ${w.join(' ')}`);
    }
  });

  test(`${version}: failures and -O`, async () => {
    const out = p('out.raw');
    const cases: [string, string[]][] = [
      ['-O luks', ['-O', 'luks', `if=${p('top.qcow2')}`, `of=${out}`]],
      ['-O bochs', ['-O', 'bochs', `if=${p('top.qcow2')}`, `of=${out}`]],
      ['-O iso', ['-O', 'iso', `if=${p('top.qcow2')}`, `of=${out}`]],
      ['-O foo', ['-O', 'foo', `if=${p('top.qcow2')}`, `of=${out}`]],
      ['-O file', ['-O', 'file', `if=${p('top.qcow2')}`, `of=${out}`, 'count=9']],
      ['-O foo and an input that fails', ['-O', 'foo', `if=${p('nobase.qcow2')}`, `of=${out}`]],
      ['missing backing file', [`if=${p('nobase.qcow2')}`, `of=${out}`]],
      ['missing input', [`if=${p('nope.qcow2')}`, `of=${out}`]],
      ['-f naming another format', ['-f', 'qcow2', `if=${p('base.raw')}`, `of=${out}`]],
      ['-f unknown', ['-f', 'foo', `if=${p('base.raw')}`, `of=${out}`]],
      ['output in a missing directory', [`if=${p('top.qcow2')}`, `of=${p('nodir/out.raw')}`]],
      ['output is a directory', [`if=${p('top.qcow2')}`, `of=${p('adir')}`]],
      ['output of an unknown protocol', [`if=${p('top.qcow2')}`, `of=foo:${p('never.raw')}`]],
      ['output of the file protocol in a missing directory', [`if=${p('top.qcow2')}`, `of=file:${p('nodir/never.raw')}`]],
      ['file: output', [`if=${p('top.qcow2')}`, `of=file:${out}`, 'count=5']],
      ['output is a device smaller than the copy', [`if=${p('top.qcow2')}`, 'of=/dev/null', 'count=3']],
      ['--image-opts', ['--image-opts', `if=driver=qcow2,file.filename=${p('top.qcow2')}`, `of=${out}`, 'bs=8k', 'skip=5']],
      ['--image-opts with an option the format lacks', ['--image-opts', `if=driver=qcow2,file.filename=${p('top.qcow2')},foo=bar`, `of=${out}`]],
      ['--image-opts with -f', ['--image-opts', '-f', 'qcow2', `if=driver=qcow2,file.filename=${p('top.qcow2')}`, `of=${out}`]],
    ];
    // A directory or a missing one as the output: no file of the test's own name may appear either.
    for (const [label, args] of cases) await sameDd(version, args, label.startsWith('output') ? p('never.raw') : out, label);
    await sameDd(version, [`if=${p('bad.qcow2')}`, `of=${out}`], out, 'a cluster that fails to read', { failedCopy: true });
    // Nothing to copy into a VMDK: qemu creates one of no sectors, which its open refuses (it
    // leaves the file; instar removes an output whose dd failed).
    for (const w of [['count=0'], ['bs=1024', 'skip=9999999', 'count=4'], ['count=2', 'skip=5']]) {
      await sameDd(version, ['-O', 'vmdk', `if=${p('top.qcow2')}`, `of=${out}`, ...w], out, `-O vmdk ${w.join(' ')}`, { failedCopy: true });
    }
    assert.ok(statSync('/dev/null').isCharacterDevice());
  });

  test(`${version}: a failed copy leaves an output that was there before`, async () => {
    const out = p('was-there.raw');
    writeFileSync(out, 'the user\'s file');
    const i = await instarRun(version, ['dd', `if=${p('bad.qcow2')}`, `of=${out}`]);
    assert.deepEqual([i.status, i.stderr], [1, 'qemu-img: error while reading from input image file: Input/output error\n']);
    assert.ok(existsSync(out), 'not removed: instar did not create it');
  });

  test(`${version}: an existing output is truncated and replaced`, async () => {
    const out = p('old.raw');
    const q = p('old.raw.qemu');
    writeFileSync(q, Buffer.alloc(3 * 1024 * 1024, 0x5a));
    const r = qemuRun(version, ['dd', `if=${p('top.qcow2')}`, `of=${q}`, 'bs=4k', 'count=3']);
    writeFileSync(out, Buffer.alloc(3 * 1024 * 1024, 0x5a));
    const i = await instarRun(version, ['dd', `if=${p('top.qcow2')}`, `of=${out}`, 'bs=4k', 'count=3']);
    assert.deepEqual([i.status, i.stderr, i.stdout], [r.status, r.stderr, r.stdout]);
    assert.ok(readFileSync(out).equals(readFileSync(q)));
    assert.equal(readFileSync(out).length, 12288);
  });

  test(`${version}: -O of a format qemu cannot create is refused as qemu refuses it, nothing made`, async () => {
    // (Every format qemu creates has a writer: test/writers, test/convert-image/dd.test.ts.)
    const q = p(`q-refused-${version}.dmg`);
    const r = qemuRun(version, ['dd', '-O', 'dmg', `if=${p('top.qcow2')}`, `of=${q}`]);
    const out = p(`refused-${version}.dmg`);
    const i = await instarRun(version, ['dd', '-O', 'dmg', `if=${p('top.qcow2')}`, `of=${out}`]);
    assert.deepEqual([i.status, i.stderr.replace(out, q), i.stdout], [r.status, r.stderr, r.stdout]);
    assert.equal(existsSync(out), existsSync(q));
  });

  test(`${version}: a backing file outside the allowed tree is refused, nothing made`, async () => {
    const out = p('evil-out.raw');
    const i = await instarRun(version, ['dd', `if=${p('evil.qcow2')}`, `of=${out}`]);
    assert.equal(i.status, 1);
    assert.match(i.stderr, /^qemu-img: Could not open '[^']*evil\.qcow2': Could not open backing file: .*\/etc\/passwd.*\n$/);
    assert.ok(!existsSync(out));
  });
}

test('through the sandbox: a window of a qcow2 over its backing file, a missing backing file, a failed read', async () => {
  const out = p('sandboxed.raw');
  await sameDd('10.0', [`if=${p('top.qcow2')}`, `of=${out}`, 'bs=3k', 'skip=30', 'count=250'], out, 'window', { sandboxed: true });
  await sameDd('7.2', [`if=${p('nobase.qcow2')}`, `of=${out}`], out, 'missing backing file', { sandboxed: true });
  await sameDd('10.0', [`if=${p('bad.qcow2')}`, `of=${out}`], out, 'failed read', { sandboxed: true, failedCopy: true });
});

test('the output is a file the input has open', async () => {
  for (const version of VERSIONS) {
    // Each side its own copies: [name in the tree, qemu's copy, instar's copy].
    const sides = ['q', 'i'].map((side) => {
      const d = p(`self-${version}-${side}`);
      mkdirSync(d);
      writeFileSync(join(d, 'self.raw'), readFileSync(p('base.raw')));
      writeFileSync(join(d, 'self.qcow2'), readFileSync(p('base.qcow2')));
      writeFileSync(join(d, 'base.qcow2'), readFileSync(p('base.qcow2')));
      writeFileSync(join(d, 'raw-base.raw'), readFileSync(p('base.raw')));
      return d;
    });
    for (const d of sides) {
      assert.equal(qemuRun('10.0', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', join(d, 'over.qcow2')]).status, 0);
      assert.equal(qemuRun('10.0', ['create', '-q', '-f', 'qcow2', '-b', 'raw-base.raw', '-F', 'raw', join(d, 'over-raw.qcow2')]).status, 0);
    }
    // qemu truncates a raw input that is its own output; a qcow2 one, or one below, it refuses (image locking).
    for (const [input, output, fmt] of [['self.raw', 'self.raw', ['-f', 'raw']], ['self.qcow2', 'self.qcow2', []], ['over.qcow2', 'base.qcow2', []]] as const) {
      const [qd, id] = sides;
      const q = qemuRun(version, ['dd', ...fmt, `if=${join(qd, input)}`, `of=${join(qd, output)}`, 'bs=4k', 'count=3']);
      const i = await instarRun(version, ['dd', ...fmt, `if=${join(id, input)}`, `of=${join(id, output)}`, 'bs=4k', 'count=3']);
      const label = `${version} ${input} -> ${output}`;
      assert.equal(i.stderr.split(id).join(qd), q.stderr, `${label}: stderr`);
      assert.equal(i.status, q.status, `${label}: status`);
      assert.ok(readFileSync(join(id, output)).equals(readFileSync(join(qd, output))), `${label}: the file`);
    }
    // A raw backing file qemu would truncate under its overlay: instar refuses it too.
    const id = sides[1];
    const i = await instarRun(version, ['dd', `if=${join(id, 'over-raw.qcow2')}`, `of=${join(id, 'raw-base.raw')}`]);
    assert.equal(i.status, 1);
    assert.match(i.stderr, /error while creating output image: Failed to get "write" lock\n/);
    assert.ok(readFileSync(join(id, 'raw-base.raw')).equals(readFileSync(p('base.raw'))));
  }
});
