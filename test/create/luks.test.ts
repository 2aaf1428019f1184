// `create -f luks` against qemu-img 7.2 and 10.0. Refusals: the same output, status and files
// (none). Volumes: the same "Formatting ..." line and file length; the header equal to qemu's
// but for what is random or timed (salts, digest, iteration counts, UUID, key material); qemu
// opens instar's volume with the secret (a pattern written with qemu-io reads back through
// instar's reader), and instar's reader unlocks qemu's volume. iter-time=10 keeps PBKDF2 short.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { retryingPbkdfFlake, runInstar, runQemu, VERSIONS, type OracleVersion } from '../helpers/oracles.ts';
import { runSide } from './harness.ts';
import { LONG, tiered } from '../helpers/long.ts';
import { luksDriver } from '../../src/formats/luks/driver.ts';
import { MemoryDevice } from '../../src/io/fd-device.ts';
import { LUKS_HEADER_SIZE, parseLuksHeader } from '../../src/formats/luks/header.ts';

let dir = '';
let empty = '';
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'instar-create-luks-'));
  empty = mkdtempSync(join(tmpdir(), 'instar-create-luks-template-'));
});
after(() => {
  rmSync(dir, { recursive: true, force: true });
  rmSync(empty, { recursive: true, force: true });
});

const SECRET = ['--object', 'secret,id=s,data=p4ss'];

const REFUSALS: string[][] = [
  ['-o', 'iter-time=10'],
  ['-o', 'key-secret=t'],
  ['-o', 'key-secret=s,cipher-alg=foo'],
  ['-o', 'key-secret=s,cipher-alg=des'],
  ['-o', 'key-secret=s,ivgen-alg=essiv,ivgen-hash-alg=sha1'],
  ['-o', 'key-secret=s,cipher-alg=cast5-128'],
  ['-o', 'preallocation=foo'],
  ['-o', 'key-secret=s,iter-time=abc'],
  ['-o', 'key-secret=s,cipher-mode=gcm'],
];

test('create -f luks refusals: output, status and files as qemu-img 7.2 and 10.0', async () => {
  const problems: string[] = [];
  const cases = [...REFUSALS.map((o) => [...SECRET, ...o]), ['--object', 'secret,id=s,format=base64,data=/w==', '-o', 'key-secret=s,cipher-alg=des']];
  for (const version of VERSIONS) {
    for (const extra of cases) {
      const args = ['create', '-f', 'luks', ...extra, 'x.luks', '1M'];
      const [q, i] = await Promise.all([runSide('qemu', version, empty, args), runSide('instar', version, empty, args)]);
      const show = (r: typeof q) => `${r.status}\n${r.stdout}\n${r.stderr}\n${[...r.files.keys()].join(' ')}`;
      if (show(q) !== show(i)) problems.push(`${version} ${extra.join(' ')}:\ninstar: ${show(i)}\nqemu:   ${show(q)}`);
    }
  }
  assert.deepEqual(problems, []);
});

test('create -f luks of a payload the file system cannot hold: the LUKS driver\'s own wording, no file', async () => {
  for (const version of VERSIONS) {
    const args = ['create', '-f', 'luks', ...SECRET, '-o', 'key-secret=s,iter-time=10', 'x.luks', '1P'];
    const [q, i] = await Promise.all([runSide('qemu', version, empty, args), runSide('instar', version, empty, args)]);
    assert.match(q.stderr, /The requested file size is too large/);
    assert.deepEqual([i.status, i.stdout, i.stderr, [...i.files.keys()]], [q.status, q.stdout, q.stderr, [...q.files.keys()]], version);
  }
});

/** The header as qemu reports it, without what is random or timed. */
function stableHeader(file: string): unknown {
  const info = parseLuksHeader(readFileSync(file).subarray(0, LUKS_HEADER_SIZE)) as unknown as Record<string, unknown>;
  const slots = (info.slots as Record<string, unknown>[]).map((s) => ({ ...s, iters: s.iters === undefined ? undefined : 'N' }));
  return { ...info, uuid: 'U', 'master-key-iters': 'N', slots };
}

/**
 * Opens `file` with instar's LUKS reader and the secret; reads `length` bytes at 0. CAST5 needs
 * OpenSSL's legacy provider, which only the guest's node has: through the sandboxed CLI then.
 */
function readWithInstar(file: string, length: number): Buffer {
  if (readFileSync(file).subarray(8, 40).toString('latin1').startsWith('cast5')) {
    const out = `${file}.raw`;
    const r = runInstar(['convert', ...SECRET, '--image-opts', `driver=luks,key-secret=s,file.filename=${file}`, '-O', 'raw', out]);
    assert.equal(r.status, 0, r.stderr);
    const bytes = readFileSync(out).subarray(0, length);
    rmSync(out);
    return bytes;
  }
  const dev = new MemoryDevice(readFileSync(file));
  const image = luksDriver.open(dev, { writable: false, key: Buffer.from('p4ss'), keyRequired: true });
  const buf = Buffer.alloc(length);
  image.read(buf, 0);
  return buf;
}

/**
 * [options, size, versions, compared with qemu's own volume]. qemu's LUKS create benchmarks
 * PBKDF2 for a second or more whatever iter-time says: only the first case (and the long tier)
 * has qemu create one; the others check instar's volume against qemu's reader only.
 */
const VOLUMES = tiered<[string, string, OracleVersion[], boolean]>([
  ['key-secret=s,iter-time=10', '1M', ['7.2', '10.0'], true],
  ['key-secret=s,iter-time=10,cipher-alg=aes-128,cipher-mode=cbc,ivgen-alg=essiv,hash-alg=sha1,preallocation=full', '1000', ['10.0'], LONG],
  ['key-secret=s,iter-time=10,cipher-alg=twofish-256,cipher-mode=xts,ivgen-alg=plain,hash-alg=sha512', '64k', ['7.2'], LONG],
  ['key-secret=s,iter-time=10,cipher-alg=serpent-128,cipher-mode=ctr,ivgen-alg=essiv,ivgen-hash-alg=sha256', '3M', ['10.0'], LONG],
  ['key-secret=s,iter-time=10,cipher-alg=cast5-128,cipher-mode=cbc,ivgen-alg=plain64,hash-alg=md5', '5k', ['7.2'], LONG],
], () => true);

const BYTES: Record<string, number> = { '1M': 1048576, 1000: 1000, '64k': 65536, '3M': 3145728, '5k': 5120 };
const ORDER = ['key-secret', 'cipher-alg', 'cipher-mode', 'ivgen-alg', 'ivgen-hash-alg', 'hash-alg', 'iter-time', 'preallocation'];
/** The options as "Formatting ..." lists them: in the driver's order, not the command line's. */
const formatted = (options: string) => options.split(',').sort((a, b) => ORDER.indexOf(a.split('=')[0]) - ORDER.indexOf(b.split('=')[0])).join(' ');

/** qemu-img 7.2's LUKS create fails at random here ("Unable to get accurate CPU usage"): retry. */
function qemuCreate(version: OracleVersion, args: string[]) {
  return retryingPbkdfFlake(() => runQemu(version, args));
}

test('create -f luks: qemu-img 7.2 and 10.0 open instar\'s volumes, instar reads theirs', async () => {
  const problems: string[] = [];
  for (const [n, [options, size, versions, withQemu]] of VOLUMES.entries()) {
    for (const version of versions) {
      const label = `${version} -o ${options} ${size}`;
      const [mine, theirs] = [join(dir, `i${n}.luks`), join(dir, `q${n}.luks`)];
      const args = (f: string) => ['create', '-f', 'luks', ...SECRET, '-o', options, f, size];
      // Sandboxed: the first case, and CAST5 (the guest's node has OpenSSL's legacy provider).
      const i = await runSide('instar', version, empty, args('i.luks'), n === 0 || options.includes('cast5'));
      const expected = `Formatting 'i.luks', fmt=luks size=${BYTES[size]} ${formatted(options)}\n`;
      if (i.status !== 0 || i.stdout !== expected || i.stderr !== '') {
        problems.push(`${label}: instar ${i.status} ${i.stdout} ${i.stderr}`);
        continue;
      }
      writeFileSync(mine, i.files.get('i.luks')!);
      // qemu's own volume of the first case: 10.0's in the short tier, 7.2's too in the long one.
      if (withQemu && (LONG || version === '10.0' || n > 0)) {
        const q = qemuCreate(version, args(theirs));
        if (q.stdout.replace(theirs, 'i.luks') !== i.stdout || q.status !== 0) problems.push(`${label}: qemu ${q.status} ${q.stdout} ${q.stderr}`);
        if (statSync(mine).size !== statSync(theirs).size) problems.push(`${label}: instar's file is ${statSync(mine).size} bytes, qemu's ${statSync(theirs).size}`);
        assert.deepEqual(stableHeader(mine), stableHeader(theirs), label);
        readWithInstar(theirs, 512);
        rmSync(theirs);
      }
      const opts = (f: string) => `driver=luks,key-secret=s,file.filename=${f}`;
      const io = runQemu(version, [...SECRET, '--image-opts', opts(mine), '-c', 'write -P 0x5a 512 512'], {}, 'qemu-io');
      if (io.status !== 0 || io.stderr !== '') problems.push(`${label}: qemu-io on instar's volume: ${io.stdout}${io.stderr}`);
      else if (!readWithInstar(mine, 1024).subarray(512).equals(Buffer.alloc(512, 0x5a))) problems.push(`${label}: qemu's writes do not read back through instar`);
      const wrong = runQemu(version, ['--object', 'secret,id=s,data=wrong', '--image-opts', opts(mine), '-c', 'read 0 512'], {}, 'qemu-io');
      if (!wrong.stderr.includes('Invalid password, cannot unlock any keyslot')) problems.push(`${label}: qemu unlocked instar's volume with a wrong password: ${wrong.stderr}`);
      rmSync(mine);
    }
  }
  assert.deepEqual(problems, []);
});
