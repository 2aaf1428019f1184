// convert -n into a LUKS2 volume made by cryptsetup. qemu-img (7.2 and 10.0) cannot open LUKS2
// ("LUKS version 2 is not supported"); instar reads it by default (docs/luks2.md) and writes into
// it as it writes into LUKS1. The proof is independent of instar's code: the payload decrypted
// with node:crypto and the volume key cryptsetup dumps equals the source where the copy wrote
// (zeros where the source has none), the rest of the payload and the whole LUKS2 header area are
// unchanged. With --unsafe-quirks instar fails as qemu does, byte for byte.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createDecipheriv } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { scratch, qemu, type Scratch } from './harness.ts';
import { runInto } from './into-harness.ts';
import { runQemu } from '../helpers/oracles.ts';
import { runInProcess } from '../helpers/in-process.ts';
import { prng } from '../helpers/xorshift.ts';
import { readJson, rewriteJson } from '../encryption/luks2-helpers.ts';

let s: Scratch;
const at = (name: string) => join(s.dir, name);
const MiB = 1024 * 1024;
const SECRET = ['--object', 'secret,id=s0,data=pw'];
const into = (file: string, ...rest: string[]) => ['-n', ...SECRET, '--target-image-opts', ...rest, `driver=luks,key-secret=s0,file.filename=${file}`];

/** A 24 MiB LUKS2 volume: a 16 MiB header area, then a payload of random bytes (cryptsetup never writes it). */
function luks2(name: string, options: string[]): void {
  const bytes = Buffer.alloc(24 * MiB);
  const next = prng(name.length);
  for (let i = 16 * MiB; i < bytes.length; i++) bytes[i] = next() & 0xff;
  writeFileSync(at(name), bytes);
  execFileSync('cryptsetup', ['luksFormat', '-q', '--type', 'luks2', '--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000', '--key-file', 'key', ...options, name], { cwd: s.dir });
}

function volumeKey(name: string): Buffer {
  const out = execFileSync('cryptsetup', ['luksDump', '-q', '--dump-volume-key', '--key-file', 'key', name], { cwd: s.dir }).toString();
  return Buffer.from(out.slice(out.indexOf('MK dump:') + 8).replace(/[^0-9a-f]/gi, ''), 'hex');
}

/** The payload of an aes-xts-plain64 volume (offset 16 MiB, IV tweak 0), decrypted by node:crypto. */
function decrypted(file: Buffer, key: Buffer, sectorSize: number): Buffer {
  const payload = file.subarray(16 * MiB);
  const out = Buffer.alloc(payload.length);
  for (let pos = 0; pos < payload.length; pos += sectorSize) {
    const iv = Buffer.alloc(16);
    iv.writeBigUInt64LE(BigInt(pos / 512));
    createDecipheriv(`aes-${key.length * 4}-xts`, key, iv).update(payload.subarray(pos, pos + sectorSize)).copy(out, pos);
  }
  return out;
}

before(() => {
  s = scratch();
  writeFileSync(at('key'), 'pw');
  const disk = Buffer.alloc(3 * MiB + 1000);
  const next = prng(3);
  for (const [offset, length] of [[0, 4096], [70000, 5000], [MiB + 512, 100000], [3 * MiB - 4096, 5000]]) for (let i = 0; i < length; i++) disk[offset + i] = next() & 0xff;
  writeFileSync(at('src.raw'), disk);
  qemu(['create', '-q', '-f', 'qcow2', at('src.qcow2'), '3M']);
  qemu(['-f', 'qcow2', '-c', 'write -P 0x11 0 64k', '-c', 'write -P 0 1M 64k', '-c', 'write -z 2M 64k', '-c', 'write -P 5 2500k 4k', at('src.qcow2')], undefined, '10.0', 'qemu-io');
  luks2('s4096.luks', ['--sector-size', '4096']);
  luks2('s512.luks', ['--sector-size', '512']);
  // cryptsetup here cannot format serpent (no device-mapper): the segment's cipher rewritten instead.
  const json = readJson(at('s4096.luks')) as { segments: Record<string, { encryption: string }> };
  json.segments['0'].encryption = 'serpent-xts-plain64';
  rewriteJson(at('s4096.luks'), at('serpent.luks'), JSON.stringify(json));
});
after(() => s.cleanup());

for (const [name, sectorSize] of [['s4096.luks', 4096], ['s512.luks', 512]] as const) {
  test(`convert -n into a LUKS2 volume with ${sectorSize}-byte sectors: the payload encrypted as cryptsetup reads it, the header untouched`, async () => {
    const original = readFileSync(at(name));
    const key = volumeKey(name);
    const before = decrypted(original, key, sectorSize);
    const source = readFileSync(at('src.raw'));
    // The disk ends inside a sector: qemu's way counts whole 512-byte sectors, zeros after the source.
    const written = Math.ceil(source.length / 512) * 512;
    for (const [label, args, sandbox] of [['raw', ['-f', 'raw', '../src.raw'], true], ['S0', ['-S', '0', '-f', 'raw', '../src.raw'], false]] as const) {
      const ours = await runInto(s.dir, 'instar', '10.0', `${name}-${label}`, name, into(name, ...args), sandbox);
      assert.deepEqual([ours.result.status, ours.result.stderr], [0, ''], label);
      assert.ok(ours.target.subarray(0, 16 * MiB).equals(original.subarray(0, 16 * MiB)), `${label}: the LUKS2 header area was written`);
      const after = decrypted(ours.target, key, sectorSize);
      assert.ok(after.subarray(0, source.length).equals(source), `${label}: the payload does not decrypt to the source`);
      assert.ok(after.subarray(source.length, written).every((b) => b === 0), `${label}: the rest of the last sector is not zero`);
      assert.ok(after.subarray(written).equals(before.subarray(written)), `${label}: the payload past the copy changed`);
    }
    // A qcow2 source: zeros where it has none.
    const ours = await runInto(s.dir, 'instar', '10.0', `${name}-qcow2`, name, into(name, '-f', 'qcow2', '../src.qcow2'));
    assert.equal(ours.result.status, 0, ours.result.stderr);
    const expected = Buffer.alloc(3 * MiB);
    expected.fill(0x11, 0, 65536);
    expected.fill(5, 2500 * 1024, 2504 * 1024);
    assert.ok(decrypted(ours.target, key, sectorSize).subarray(0, 3 * MiB).equals(expected), 'qcow2 source: the payload does not decrypt to it');
  });
}

test('convert -n into a LUKS2 volume instar cannot encrypt (serpent in 4 KiB sectors), or with a wrong passphrase: one line, nothing written', async () => {
  const ours = await runInto(s.dir, 'instar', '10.0', 'serpent', 'serpent.luks', into('serpent.luks', '-f', 'raw', '../src.raw'));
  assert.deepEqual([ours.result.status, ours.result.stderr], [1, 'qemu-img: instar cannot convert into this LUKS2 volume (instar does not encrypt serpent-256-xts-plain64 in 4096-byte sectors yet); nothing was written\n']);
  assert.ok(ours.target.equals(readFileSync(at('serpent.luks'))), 'the volume was written');
  const wrong = await runInto(s.dir, 'instar', '10.0', 'wrong', 's4096.luks', ['-n', '--object', 'secret,id=s0,data=no', '--target-image-opts', '-f', 'raw', '../src.raw', 'driver=luks,key-secret=s0,file.filename=s4096.luks']);
  assert.equal(wrong.result.status, 1);
  assert.match(wrong.result.stderr, /^qemu-img: Could not open '[^']+': Invalid password, cannot unlock any keyslot\n$/);
  assert.ok(wrong.target.equals(readFileSync(at('s4096.luks'))), 'the volume was written');
});

test('convert -n into a LUKS2 volume with --unsafe-quirks: qemu\'s refusal, byte for byte', async () => {
  const original = readFileSync(at('s4096.luks'));
  const args = ['convert', ...into('s4096.luks', '-f', 'raw', 'src.raw')];
  for (const version of ['7.2', '10.0'] as const) {
    const theirs = runQemu(version, args, { cwd: s.dir });
    const ours = await runInProcess(['--sandbox=none', `--qemu-version=${version}`, '--unsafe-quirks', ...args], s.dir);
    assert.equal(theirs.status, 1);
    assert.deepEqual([ours.status, ours.stdout, ours.stderr], [theirs.status, theirs.stdout, theirs.stderr], version);
  }
  assert.ok(readFileSync(at('s4096.luks')).equals(original), 'the volume was written');
});
