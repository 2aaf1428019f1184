// The LUKS writer (convert -O luks) against qemu-img convert -O luks (7.2 and 10.0), in-process:
// create's layout, then the writer fed the source's guest data in ascending order, skipping
// zeros (the writer encrypts zeros into the gaps itself: a fresh LUKS volume does not read as
// zeros). qemu's `compare src out` finds instar's volume identical to the source, instar's file
// is as long and as allocated as qemu's, `info` prints the same but for the UUID and the timed
// iteration counts, and instar's reader reads qemu's volume back as the source.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { retryingPbkdfFlake, runInstar, runQemu, type OracleVersion } from '../helpers/oracles.ts';
import { LONG, tiered } from '../helpers/long.ts';
import { allocated, chainFiles, holesFile, MiB, rawFile } from './vpc-vmdk-harness.ts';
import { convertWithInstar, openWriter } from './vhdx-harness.ts';
import { luksDriver } from '../../src/formats/luks/driver.ts';
import { MemoryDevice } from '../../src/io/fd-device.ts';

let dir = '';
const at = (name: string) => join(dir, name);
const sources = new Map<string, [string, string]>();
const SECRETS = new Map([['s', Buffer.from('p4ss')]]);
const OBJECT = ['--object', 'secret,id=s,data=p4ss'];

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'instar-writer-luks-'));
  const holes = holesFile(at('holes.raw'));
  sources.set('holes', [holes, holes]);
  const empty = rawFile(at('empty.raw'), MiB, []);
  sources.set('empty', [empty, empty]);
  sources.set('chain', chainFiles(dir));
});
after(() => rmSync(dir, { recursive: true, force: true }));

/**
 * [source, options, versions, short tier]. qemu's LUKS create benchmarks PBKDF2 for a second or
 * more whatever iter-time says, so the short tier has one qemu conversion.
 */
const CASES = tiered<[string, string, OracleVersion[], boolean]>([
  ['holes', '', ['10.0'], LONG],
  ['chain', 'cipher-alg=aes-128,cipher-mode=cbc,ivgen-alg=essiv', ['7.2'], true],
  ['holes', 'cipher-alg=twofish-256,cipher-mode=xts,hash-alg=sha1', ['7.2', '10.0'], LONG],
  ['empty', 'cipher-alg=serpent-256,cipher-mode=ctr,ivgen-alg=plain', ['10.0'], LONG],
  ['chain', 'cipher-alg=aes-192,cipher-mode=xts', ['10.0'], LONG],
], (c) => c[3]);

const imageOpts = (file: string, driver = 'luks') => `driver=${driver},${driver === 'luks' ? 'key-secret=s,' : ''}file.filename=${file}`;

function qemuConvert(version: OracleVersion, args: string[]) {
  const r = retryingPbkdfFlake(() => runQemu(version, args));
  if (r.status !== 0) throw new Error(`qemu-img ${version} ${args.join(' ')}: ${r.stderr}`);
}

/** `info` without what is random or timed. */
const stableInfo = (text: string) => text.replace(/^( *)(uuid|iters|master key iters): .*$/gm, '$1$2: X').replace(/^ *disk size: .*\n/gm, '');

function readLuks(file: string): Buffer {
  const image = luksDriver.open(new MemoryDevice(readFileSync(file)), { writable: false, key: Buffer.from('p4ss'), keyRequired: true });
  const buf = Buffer.alloc(image.virtualSize);
  image.read(buf, 0);
  return buf;
}

test('convert -O luks: instar\'s writer against qemu-img 7.2 and 10.0 (compare, length, allocation, info)', () => {
  const problems: string[] = [];
  CASES.forEach(([source, extra, versions], n) => {
    const [qemuSrc, rawSrc] = sources.get(source)!;
    const options = `key-secret=s,iter-time=10${extra ? `,${extra}` : ''}`;
    for (const version of versions) {
      const label = `${source} -o ${options} (${version})`;
      const [mine, theirs] = [at(`i${n}-${version}.luks`), at(`q${n}-${version}.luks`)];
      convertWithInstar('luks', options, rawSrc, mine, version, SECRETS);
      qemuConvert(version, ['convert', ...OBJECT, '-O', 'luks', '-o', options, qemuSrc, theirs]);
      const cmp = runQemu(version, ['compare', ...OBJECT, '--image-opts', imageOpts(rawSrc, 'raw'), imageOpts(mine)]);
      if (cmp.status !== 0) problems.push(`${label}: qemu-img compare: ${cmp.stdout}${cmp.stderr}`);
      if (statSync(mine).size !== statSync(theirs).size) problems.push(`${label}: instar's file is ${statSync(mine).size} bytes, qemu's ${statSync(theirs).size}`);
      if (allocated(mine) !== allocated(theirs)) problems.push(`${label}: instar's file has ${allocated(mine)} bytes allocated, qemu's ${allocated(theirs)}`);
      const info = (f: string) => stableInfo(runQemu(version, ['info', ...OBJECT, '--image-opts', imageOpts(f)]).stdout.split(f).join('FILE'));
      if (info(mine) !== info(theirs)) problems.push(`${label}: info\ninstar: ${info(mine)}\nqemu:   ${info(theirs)}`);
      const raw = readFileSync(rawSrc);
      const back = readLuks(theirs);
      if (!back.subarray(0, raw.length).equals(raw) || back.subarray(raw.length).some((b) => b !== 0)) problems.push(`${label}: instar's reader does not read qemu's volume as the source`);
      rmSync(mine);
      rmSync(theirs);
    }
  });
  assert.deepEqual(problems, []);
});

test('convert -O luks from the command line (sandboxed): the secret from --object, qemu\'s progress, the same disk', () => {
  const [, rawSrc] = sources.get('holes')!;
  const args = ['convert', '-p', '-f', 'raw', '-O', 'luks', ...OBJECT, '-o', 'key-secret=s,iter-time=10', rawSrc];
  const mine = runInstar([...args, at('cli-i.luks'), '--qemu-version', '10.0']);
  const theirs = runQemu('10.0', [...args, at('cli-q.luks')]);
  assert.equal(mine.status, 0, mine.stderr);
  assert.equal(mine.stdout, theirs.stdout);
  assert.equal(mine.stderr, theirs.stderr);
  assert.equal(runQemu('10.0', ['compare', ...OBJECT, '--image-opts', imageOpts(rawSrc, 'raw'), imageOpts(at('cli-i.luks'))]).stdout, 'Images are identical.\n');
  assert.equal(statSync(at('cli-i.luks')).size, statSync(at('cli-q.luks')).size);
  const wrong = runInstar(['convert', '-f', 'raw', '-O', 'luks', '-o', 'key-secret=s', rawSrc, at('cli-none.luks')]);
  assert.equal(wrong.status, 1);
  assert.match(wrong.stderr, /No secret with id 's'/);
  assert.throws(() => statSync(at('cli-none.luks')), 'a failed convert leaves no file');
});

test('luks writer: out-of-order and out-of-disk writes are refused with a one-line ImageError', () => {
  const { writer, fd } = openWriter('luks', 'key-secret=s,iter-time=1', MiB, at('refuse.luks'), '10.0', SECRETS);
  try {
    assert.throws(() => writer.write(Buffer.alloc(512, 1), 2 * MiB), { name: 'ImageError', message: /outside the \d+-byte disk/ });
    writer.write(Buffer.alloc(4096, 1), 8192);
    assert.throws(() => writer.write(Buffer.alloc(512, 1), 0), { name: 'ImageError', message: /ascending order/ });
  } finally {
    closeSync(fd);
  }
});
