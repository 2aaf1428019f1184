// convert -n into an existing LUKS volume (OpenStack's way: --target-image-opts
// driver=luks,key-secret=…,file.filename=…) against qemu-img 7.2 and 10.0: each tool writes into
// its own copy of the same volume, and the volumes must be equal byte for byte afterwards (the
// payload encrypted with the volume's master key, zeros where the sources have none, the rest of
// the volume as it was); then qemu's failures (no secret, a wrong one, no key-secret, -O luks, a
// smaller volume, -c, not a LUKS volume) with nothing written (LUKS2 volumes: into-luks2.test.ts). The volume's header is never
// written, so a crash at any point leaves a volume qemu-img opens.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { scratch, qemu, type Scratch } from './harness.ts';
import { sameInto } from './into-harness.ts';
import { runInProcess } from '../helpers/in-process.ts';
import { prng } from '../helpers/xorshift.ts';
import { oracle } from '../helpers/oracles.ts';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

let s: Scratch;
const at = (name: string) => join(s.dir, name);
const MiB = 1024 * 1024;
const SECRET = ['--object', 'secret,id=s0,data=pw'];
const luksOpts = (file: string, secret = 's0') => `driver=luks,key-secret=${secret},file.filename=${file}`;
const into = (file: string, ...rest: string[]) => ['-n', ...SECRET, '--target-image-opts', ...rest, luksOpts(file)];

before(async () => {
  s = scratch();
  const disk = Buffer.alloc(3 * MiB);
  const next = prng(7);
  for (const [offset, length] of [[0, 4096], [70000, 5000], [MiB + 512, 100000], [3 * MiB - 4096, 4096]]) for (let i = 0; i < length; i++) disk[offset + i] = next() & 0xff;
  writeFileSync(at('src.raw'), disk);
  // A disk that ends inside a sector (qemu counts whole sectors).
  writeFileSync(at('odd.raw'), disk.subarray(0, MiB + 1000));
  qemu(['create', '-q', '-f', 'qcow2', at('src.qcow2'), '3M']);
  qemu(['-f', 'qcow2', '-c', 'write -P 0x11 0 64k', '-c', 'write -P 0 1M 64k', '-c', 'write -z 2M 64k', '-c', 'write -P 5 2500k 4k', at('src.qcow2')], undefined, '10.0', 'qemu-io');
  // The volumes as qemu makes them (the payload never written reads as garbage once decrypted),
  // side by side: qemu's LUKS create spends ~3 s benchmarking PBKDF2 whatever iter-time says.
  const create = (name: string, options: string, size: string) => run(oracle('10.0'), ['create', '-q', '-f', 'luks', ...SECRET, '-o', `key-secret=s0,iter-time=10${options}`, at(name), size]);
  await Promise.all([create('vol.luks', '', '4M'), create('cbc.luks', ',cipher-alg=aes-128,cipher-mode=cbc,ivgen-alg=essiv,ivgen-hash-alg=sha256', '3M')]);
});
after(() => s.cleanup());

/** The volume's bytes before its payload (header and key material): never written. */
function headerUnchanged(target: Buffer, original: string): void {
  const payload = 512 * readFileSync(at(original)).readUInt32BE(104);
  assert.ok(target.subarray(0, payload).equals(readFileSync(at(original)).subarray(0, payload)), 'the LUKS header was written');
}

test('convert -n into a LUKS volume (sandboxed): the payload encrypted in place, the header and the rest of the volume untouched', async () => {
  const [ours] = await sameInto(s.dir, 'raw', 'vol.luks', into('vol.luks', '-f', 'raw', '../src.raw'), true);
  headerUnchanged(ours.target, 'vol.luks');
  const compare = await runInProcess(['--sandbox=none', 'compare', ...SECRET, '--image-opts', 'driver=raw,file.filename=src.raw', luksOpts('raw-instar-10.0/vol.luks')], s.dir);
  assert.match(compare.stdout + compare.stderr, /Content mismatch at offset 3145728/, 'the copy is the disk, the volume past it as it was');
});

test('convert -n into a LUKS volume from a qcow2 source with holes and zero clusters: default, -S 0, --target-is-zero, -p', async () => {
  const src = ['-f', 'qcow2', '../src.qcow2'];
  await sameInto(s.dir, 'qcow2', 'vol.luks', into('vol.luks', ...src));
  await sameInto(s.dir, 'S0', 'vol.luks', into('vol.luks', '-S', '0', ...src));
  // --target-is-zero: what the copy skips keeps the volume's old bytes.
  await sameInto(s.dir, 'is-zero', 'vol.luks', into('vol.luks', '--target-is-zero', ...src));
  await sameInto(s.dir, 'progress', 'vol.luks', into('vol.luks', '-p', ...src));
});

test('convert -n into a LUKS volume: two sources, a disk ending inside a sector, another cipher (aes-128-cbc-essiv), -t writeback, -B', async () => {
  await sameInto(s.dir, 'two', 'vol.luks', into('vol.luks', '-f', 'raw', '../odd.raw', '../odd.raw'));
  await sameInto(s.dir, 'cbc', 'cbc.luks', into('cbc.luks', '-f', 'raw', '../odd.raw'));
  await sameInto(s.dir, 'writeback', 'vol.luks', into('vol.luks', '-t', 'writeback', '-f', 'qcow2', '../src.qcow2'));
  // -B with a source that has no backing file changes nothing in qemu.
  await sameInto(s.dir, 'B', 'vol.luks', into('vol.luks', '-B', 'base.qcow2', '-f', 'raw', '../src.raw'));
  // No driver=: the format probed, key-secret then luks's option.
  await sameInto(s.dir, 'probed', 'vol.luks', ['-n', ...SECRET, '--target-image-opts', '-f', 'raw', '../odd.raw', 'file.filename=vol.luks,key-secret=s0']);
});

test('convert -n into a LUKS volume, qemu\'s failures: nothing written', async () => {
  const raw = ['-f', 'raw', '../src.raw'];
  const cases: [string, string, string[]][] = [
    ['wrong', 'vol.luks', ['-n', '--object', 'secret,id=s0,data=nope', '--target-image-opts', ...raw, luksOpts('vol.luks')]],
    ['no-object', 'vol.luks', ['-n', '--target-image-opts', ...raw, luksOpts('vol.luks')]],
    ['other-id', 'vol.luks', ['-n', ...SECRET, '--target-image-opts', ...raw, luksOpts('vol.luks', 's1')]],
    ['no-key-secret', 'vol.luks', ['-n', ...SECRET, '--target-image-opts', ...raw, 'driver=luks,file.filename=vol.luks']],
    // -O luks cannot name a key-secret (-o is refused with -n): qemu always fails so.
    ['O-luks', 'vol.luks', ['-n', '-O', 'luks', ...SECRET, ...raw, 'vol.luks']],
    ['smaller', 'cbc.luks', into('cbc.luks', ...raw, '../src.raw')],
    ['compress', 'vol.luks', into('vol.luks', '-c', ...raw)],
    ['not-luks', 'src.qcow2', into('src.qcow2', ...raw)],
    ['missing', 'vol.luks', ['-n', ...SECRET, '--target-image-opts', ...raw, luksOpts('gone.luks')]],
    ['with-O', 'vol.luks', ['-n', '-O', 'luks', ...SECRET, '--target-image-opts', ...raw, luksOpts('vol.luks')]],
    ['bad-driver', 'vol.luks', ['-n', '--target-image-opts', ...raw, 'driver=nosuch,file.filename=vol.luks']],
    ['bad-option', 'vol.luks', ['-n', ...SECRET, '--target-image-opts', ...raw, `${luksOpts('vol.luks')},foo=bar`]],
    ['bad-source', 'vol.luks', into('vol.luks', '-f', 'raw', '../gone.raw')],
    ['O-luks-o', 'vol.luks', ['-n', '-O', 'luks', ...SECRET, '-o', 'key-secret=s0', ...raw, 'vol.luks']],
    // Probed targets: qemu opens the image, then names an option its format does not have.
    ['probed-qcow2', 'src.qcow2', ['-n', ...SECRET, '--target-image-opts', ...raw, 'file.filename=src.qcow2,key-secret=s0']],
    ['probed-foo', 'vol.luks', ['-n', ...SECRET, '--target-image-opts', ...raw, 'file.filename=vol.luks,key-secret=s0,foo=bar']],
    ['probed-no-key', 'vol.luks', ['-n', ...SECRET, '--target-image-opts', ...raw, 'file.filename=vol.luks,foo=bar']],
    ['probed-other-id', 'vol.luks', ['-n', ...SECRET, '--target-image-opts', ...raw, 'file.filename=vol.luks,key-secret=s9']],
  ];
  for (const [label, target, args] of cases) {
    const [ours] = await sameInto(s.dir, label, target, args);
    assert.equal(ours.result.status, 1, label);
    assert.ok(ours.target.equals(readFileSync(at(target))), `${label}: the target was written`);
  }
});
