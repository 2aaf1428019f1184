// convert -O qcow2 -o encrypt.format=luks against qemu-img 7.2 and 10.0. The master key is
// random, so the files cannot be equal byte for byte; what must hold: qemu's compare (with the
// secret) finds instar's image identical to the source, qemu's check is clean, qemu's info is
// qemu's but for the LUKS random fields, the files are as long, their all-zero 512-byte sectors
// are the same (so every data cluster is encrypted whole, copy-on-write zeros and the tail past
// the disk included, exactly where qemu's are), and they differ only inside the LUKS area and
// inside data clusters. instar reads its own image back. qemu's LUKS create benchmarks PBKDF2
// for ~2.5 s whatever iter-time says: two oracle conversions in the default tier, the extended
// L2 case in the long tier.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { oracle, PBKDF_FLAKE, runInstar, runQemu, type OracleVersion } from '../helpers/oracles.ts';
import { runInProcess } from '../helpers/in-process.ts';
import { scratch, type Scratch } from './harness.ts';
import { LONG, longTest } from '../helpers/long.ts';

let s: Scratch;
const at = (name: string) => join(s.dir, name);
const OBJECT = ['--object', 'secret,id=s0,data=pw'];
const ENCRYPT = 'encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10';
const SIZE = 3 * 1024 * 1024 + 4096;

before(() => {
  s = scratch();
  const disk = Buffer.alloc(SIZE);
  // Two pieces in one cluster (the second writes into an allocated one), an unaligned piece
  // across a cluster boundary, and a last cluster the disk covers in part.
  for (const [start, length] of [[0, 4096], [32768, 4096], [200000, 8192], [SIZE - 4096, 4096]]) randomBytes(length).copy(disk, start);
  writeFileSync(at('src.raw'), disk);
});
after(() => s.cleanup());

const qcow2Opts = (file: string) => `driver=qcow2,encrypt.key-secret=s0,file.filename=${file}`;

/**
 * qemu-img convert, asynchronously (the LUKS conversions run side by side: each spends ~2.5 s
 * benchmarking PBKDF2); qemu-img 7.2's LUKS create fails at random here ("Unable to get accurate
 * CPU usage"): retried.
 */
async function qemuConvert(version: OracleVersion, args: string[]): Promise<void> {
  let last = '';
  for (let i = 0; i < 30; i++) {
    try {
      await run(oracle(version), args, { cwd: s.dir, timeout: 60_000 });
      return;
    } catch (e) {
      last = String((e as { stderr?: string }).stderr ?? e);
      if (!last.includes(PBKDF_FLAKE)) break;
    }
  }
  assert.fail(`qemu-img ${version} ${args.join(' ')}: ${last}`);
}

const run = promisify(execFile);
/** The oracles' conversions of each case, started at once in before(). */
const theirs = new Map<string, Promise<void>>();

/** `info` without what is random or timed. */
const stableInfo = (text: string) => text.replace(/^( *)(uuid|iters|master key iters): .*$/gm, '$1$2: X').replace(/^ *disk size: .*\n/gm, '');

/**
 * Where the files may differ: the data clusters qemu's L2 tables point at (map gives no offsets
 * for encrypted images) and the LUKS area the crypto header extension names.
 */
function mayDiffer(file: string): [number, number][] {
  const bytes = readFileSync(file);
  const cs = 2 ** bytes.readUInt32BE(20);
  const entry = (bytes.readBigUInt64BE(72) & 16n) !== 0n ? 16 : 8;
  const offsetMask = 2n ** 56n - 512n;
  const ranges: [number, number][] = [];
  const l1 = Number(bytes.readBigUInt64BE(40));
  for (let i = 0; i < bytes.readUInt32BE(36); i++) {
    const l2 = Number(bytes.readBigUInt64BE(l1 + 8 * i) & offsetMask);
    if (l2 === 0) continue;
    for (let j = 0; j < cs / entry; j++) {
      const host = Number(bytes.readBigUInt64BE(l2 + j * entry) & offsetMask);
      if (host !== 0) ranges.push([host, host + cs]);
    }
  }
  for (let off = bytes.readUInt32BE(100); off + 8 <= cs; ) {
    const type = bytes.readUInt32BE(off);
    if (type === 0) break;
    if (type === 0x0537be77) {
      const start = Number(bytes.readBigUInt64BE(off + 8));
      ranges.push([start, start + Number(bytes.readBigUInt64BE(off + 16))]);
    }
    off += 8 + Math.ceil(bytes.readUInt32BE(off + 4) / 8) * 8;
  }
  return ranges;
}

function compareFiles(label: string, mine: string, theirs: string): void {
  const a = readFileSync(mine);
  const b = readFileSync(theirs);
  assert.equal(a.length, b.length, `${label}: instar's file is ${a.length} bytes, qemu's ${b.length}`);
  const zero = Buffer.alloc(512);
  const ranges = mayDiffer(theirs);
  assert.ok(ranges.length >= 2, `${label}: no data clusters or LUKS area found`);
  for (let off = 0; off < a.length; off += 512) {
    const [x, y] = [a.subarray(off, off + 512), b.subarray(off, off + 512)];
    assert.equal(x.equals(zero), y.equals(zero), `${label}: sector at ${off} is all zeros in only one file`);
    if (!x.equals(y)) assert.ok(ranges.some(([s0, e]) => off >= s0 && off < e), `${label}: the files differ at ${off}, outside data clusters and the LUKS area`);
  }
}

function checkAgainst(version: OracleVersion, mine: string, theirs: string, label: string): void {
  const cmp = runQemu(version, ['compare', ...OBJECT, '--image-opts', `driver=raw,file.filename=${at('src.raw')}`, qcow2Opts(mine)]);
  assert.equal(cmp.status, 0, `${label}: qemu-img compare: ${cmp.stdout}${cmp.stderr}`);
  const check = (f: string) => runQemu(version, ['check', ...OBJECT, '--image-opts', qcow2Opts(f)]);
  assert.deepEqual(check(mine), check(theirs), `${label}: qemu-img check`);
  assert.equal(check(mine).status, 0);
  const info = (f: string) => stableInfo(runQemu(version, ['info', ...OBJECT, '--image-opts', qcow2Opts(f)]).stdout.split(f).join('FILE'));
  assert.equal(info(mine), info(theirs), `${label}: qemu-img info`);
  compareFiles(label, mine, theirs);
  // instar's own reader: the image reads back as the source.
  const back = runInstar(['compare', ...OBJECT, '--image-opts', `driver=raw,file.filename=${at('src.raw')}`, qcow2Opts(mine)]);
  assert.equal(back.stdout, 'Images are identical.\n', `${label}: instar compare: ${back.stderr}`);
}

const CASES: { label: string; version: OracleVersion; options: string; sandbox: boolean; long?: boolean }[] = [
  { label: 'default', version: '7.2', options: '', sandbox: true },
  { label: 'default', version: '10.0', options: '', sandbox: false },
  { label: 'extended-l2', version: '10.0', options: ',extended_l2=on,cluster_size=128k', sandbox: false, long: true },
];

const luksArgs = (c: (typeof CASES)[number]) => ['convert', ...OBJECT, '-f', 'raw', '-O', 'qcow2', '-o', `${ENCRYPT}${c.options}`, 'src.raw'];

before(() => {
  for (const c of CASES) {
    const name = `${c.label}-${c.version}`;
    if (!c.long || LONG) theirs.set(name, qemuConvert(c.version, [...luksArgs(c), `${name}-q.qcow2`]));
  }
});

for (const c of CASES) {
  (c.long ? longTest : test)(`convert -O qcow2 -o encrypt.format=luks${c.options} (${c.version}${c.sandbox ? ', sandboxed' : ''}): what qemu writes but the key`, async () => {
    const name = `${c.label}-${c.version}`;
    const args = luksArgs(c);
    const mine = c.sandbox
      ? runInstar([`--qemu-version=${c.version}`, ...args, `${name}-i.qcow2`], { cwd: s.dir })
      : await runInProcess(['--sandbox=none', `--qemu-version=${c.version}`, ...args, `${name}-i.qcow2`], s.dir);
    assert.deepEqual([mine.status, mine.stdout, mine.stderr], [0, '', '']);
    await theirs.get(name);
    checkAgainst(c.version, at(`${name}-i.qcow2`), at(`${name}-q.qcow2`), name);
  });
}

// Legacy AES (crypt method 1) has no randomness: the key is the passphrase, so instar's file must
// be qemu's byte for byte, for convert and for create (messages included).
test('convert -O qcow2 -o encrypt.format=aes / encryption=on: byte-identical to qemu-img 7.2 and 10.0', async () => {
  for (const version of ['7.2', '10.0'] as const) {
    for (const [label, options] of [['aes', 'encrypt.format=aes,encrypt.key-secret=s0'], ['aes-v2', 'encryption=on,encrypt.key-secret=s0,compat=0.10,cluster_size=4k']]) {
      const name = `${label}-${version}`;
      const args = ['convert', ...OBJECT, '-f', 'raw', '-O', 'qcow2', '-o', options, 'src.raw'];
      const mine = await runInProcess(['--sandbox=none', `--qemu-version=${version}`, ...args, `${name}-i.qcow2`], s.dir);
      const theirs = runQemu(version, [...args, `${name}-q.qcow2`], { cwd: s.dir });
      assert.deepEqual([mine.status, mine.stdout, mine.stderr], [theirs.status, theirs.stdout, theirs.stderr], name);
      assert.ok(readFileSync(at(`${name}-i.qcow2`)).equals(readFileSync(at(`${name}-q.qcow2`))), `${name}: the files differ`);
    }
  }
  const back = runInstar(['compare', ...OBJECT, '--image-opts', `driver=raw,file.filename=${at('src.raw')}`, qcow2Opts(at('aes-10.0-i.qcow2'))]);
  assert.equal(back.stdout, 'Images are identical.\n', back.stderr);
});

test('create -f qcow2 -o encrypt.format=aes: output, status and file as qemu-img 7.2 and 10.0', async () => {
  const cases = [
    'encrypt.format=aes,encrypt.key-secret=s0',
    'encryption=on,encrypt.key-secret=s0,compat=0.10',
    'encrypt.format=aes,encrypt.key-secret=zz',
    'encrypt.format=aes',
    'encryption=on,encrypt.format=luks,encrypt.key-secret=s0',
    'encrypt.format=aes,encrypt.key-secret=s0,encrypt.cipher-alg=aes-128',
  ];
  for (const version of ['7.2', '10.0'] as const) {
    for (const [n, options] of cases.entries()) {
      const args = (file: string) => ['create', '-f', 'qcow2', ...OBJECT, '-o', options, file, '1M'];
      const mine = await runInProcess(['--sandbox=none', `--qemu-version=${version}`, ...args(`c${n}-${version}-i.qcow2`)], s.dir);
      const theirs = runQemu(version, args(`c${n}-${version}-q.qcow2`), { cwd: s.dir });
      const show = (r: { status: number | null; stdout: string; stderr: string }, file: string) => [r.status, r.stdout.replace(file, 'F'), r.stderr.replace(file, 'F')];
      assert.deepEqual(show(mine, `c${n}-${version}-i.qcow2`), show(theirs, `c${n}-${version}-q.qcow2`), `${version} ${options}`);
      const file = (side: string) => {
        try {
          return readFileSync(at(`c${n}-${version}-${side}.qcow2`));
        } catch {
          return undefined;
        }
      };
      assert.deepEqual(file('i'), file('q'), `${version} ${options}: the files`);
    }
  }
});

test('encrypted qcow2 output instar cannot write yet is refused, and nothing is left behind', async () => {
  for (const [options, text] of [
    [`${ENCRYPT},preallocation=metadata`, 'instar cannot write encrypted qcow2 images with preallocation yet'],
  ]) {
    const r = await runInProcess(['--sandbox=none', 'convert', ...OBJECT, '-f', 'raw', '-O', 'qcow2', '-o', options, 'src.raw', 'refused.qcow2'], s.dir);
    assert.equal(r.status, 1, options);
    assert.match(r.stderr, new RegExp(`^qemu-img: .*${text}`), options);
    assert.throws(() => readFileSync(at('refused.qcow2')), /ENOENT/, `${options}: the target stays`);
  }
});
