// amend of LUKS1 key slots (luks files and qcow2 encrypt.format=luks) against qemu-img 7.2 and
// 10.0. A new slot's key material is random, so additions are compared by behaviour: both oracles
// open instar's image with the new secret and read the plain data, the old secret still opens it,
// and `info` equals that of qemu's own amend of the same image (iteration counts aside: both time
// PBKDF2 on this machine). An erase leaves a LUKS header byte-identical to qemu's and every byte
// outside the wiped key material unchanged. Refusals: stderr, stdout and exit status identical to
// both oracles, the image untouched. Crash safety: after every prefix of the writes, each slot
// the header calls active opens with its passphrase.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, copyFileSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { ImageDir, md5, qemuAsync } from './helpers.ts';
import { cryptsetup } from './luks2-helpers.ts';
import { patternBytes } from '../convert/helpers.ts';
import { VERSIONS, retryingPbkdfFlake, runInstar, runQemu, type OracleVersion, type RunResult } from '../helpers/oracles.ts';
import { runInProcess } from '../helpers/in-process.ts';
import { FdDevice } from '../../src/io/fd-device.ts';
import { findDriver } from '../../src/formats/registry.ts';
import { applyRepair, writeCount } from '../../src/formats/repair.ts';
import { luksKeyFields } from '../../src/formats/luks/header.ts';
import type { AmendContext } from '../../src/formats/types.ts';

const images = new ImageDir('amend-luks');
const SECRETS = { s0: 'old', s1: 'new', s2: 'other' } as const;
type SecretId = keyof typeof SECRETS;
const OBJECTS = Object.entries(SECRETS).flatMap(([id, data]) => ['--object', `secret,id=${id},data=${data}`]);
const SIZE = 1024 * 1024;

type Kind = 'luks' | 'qcow2';
/** The --image-opts of an image opened with `key`, and the options' prefix, per format. */
const FORMATS: Record<Kind, { opts: (file: string, key: SecretId) => string; prefix: string }> = {
  luks: { opts: (file, key) => `driver=luks,key-secret=${key},file.filename=${file}`, prefix: '' },
  qcow2: { opts: (file, key) => `driver=qcow2,encrypt.key-secret=${key},file.filename=${file}`, prefix: 'encrypt.' },
};

/** The -o list with each option under the format's prefix ("state=active" → "encrypt.state=active"). */
const optionList = (kind: Kind, list: string): string => list.split(',').map((o) => FORMATS[kind].prefix + o).join(',');

let copies = 0;
/** A fresh copy of image `name` in the directory. */
function copy(name: string): string {
  const file = `c${copies++}-${name}`;
  copyFileSync(images.path(name), images.path(file));
  return file;
}

/** The LUKS header's place in an image file: 0 in a luks file, the crypto extension's area in a qcow2. */
function luksBase(file: string): number {
  const b = readFileSync(images.path(file));
  if (b.subarray(0, 4).toString('latin1') !== 'QFI\xfb') return 0;
  // Extensions follow the header: 72 bytes in version 2, its header_length in version 3.
  for (let at = b.readUInt32BE(4) >= 3 ? b.readUInt32BE(100) : 72; at < 65536;) {
    const type = b.readUInt32BE(at);
    const length = b.readUInt32BE(at + 4);
    if (type === 0x0537be77) return Number(b.readBigUInt64BE(at + 8));
    if (type === 0) break;
    at += 8 + Math.ceil(length / 8) * 8;
  }
  throw new Error(`${file}: no crypto header extension`);
}

/** Runs an oracle in the image directory, again while 7.2's PBKDF2 timing fails at random (FACTS.md). */
function oracle(version: OracleVersion, args: string[]): RunResult {
  return retryingPbkdfFlake(() => runQemu(version, args, { cwd: images.dir }));
}

/** The amend's argv for `file` opened with `key`. */
const amendArgs = (kind: Kind, file: string, list: string, extra: string[] = [], key: SecretId = 's0'): string[] =>
  ['amend', ...OBJECTS, ...extra, '-o', optionList(kind, list), '--image-opts', FORMATS[kind].opts(file, key)];

/** Whether both oracles read the plain data from `file` opened with `key` (and say so the same way). */
function opensWith(kind: Kind, file: string, key: SecretId): boolean {
  const results = VERSIONS.map((v) => oracle(v, ['compare', ...OBJECTS, '--image-opts', FORMATS[kind].opts(file, key), 'driver=raw,file.filename=plain.raw']));
  assert.deepEqual(results[0], results[1], `${file} with ${key}: the oracles disagree`);
  if (results[0].status === 0) return true;
  assert.match(results[0].stderr, /Invalid password, cannot unlock any keyslot/, `${file} with ${key}`);
  return false;
}

/** qemu-img info --output=json's encryption data, iteration counts of key slots blanked. */
function slotsInfo(kind: Kind, file: string): unknown {
  const r = oracle('10.0', ['info', '--output=json', file]);
  assert.equal(r.status, 0, r.stderr);
  const info = JSON.parse(r.stdout)['format-specific'].data;
  const luks = kind === 'luks' ? info : info.encrypt;
  for (const slot of luks.slots) if (slot.iters !== undefined) slot.iters = 'timed';
  return luks;
}

/**
 * Ranges where `a` and `b` differ, gaps under 4 KiB merged and ends rounded out to 512-byte
 * sectors: the rewritten key material is random, and a random byte that happens to equal the
 * old one at a range's end (1 in 256) must not move the range.
 */
function differences(a: Buffer, b: Buffer): [number, number][] {
  assert.equal(a.length, b.length);
  const ranges: [number, number][] = [];
  for (let i = 0; i < a.length; i++) {
    if (a[i] === b[i]) continue;
    const last = ranges.at(-1);
    if (last && last[1] >= i - 4096) last[1] = i + 1;
    else ranges.push([i, i + 1]);
  }
  return ranges.map(([s, e]) => [Math.floor(s / 512) * 512, Math.ceil(e / 512) * 512]);
}

/** Asserts that two amended copies differ at most in slot `slot`'s iteration count and salt (when `added`) and its key material. */
function sameButSlot(mine: string, theirs: string, slot: number, added: boolean, label: string): void {
  const base = luksBase(mine);
  const mask = (file: string): Buffer => {
    const b = readFileSync(images.path(file));
    const fields = luksKeyFields(b.subarray(base, base + 592));
    const entry = base + 208 + slot * 48;
    if (added) b.fill(0, entry + 4, entry + 40);
    const material = base + fields.slots[slot].keyOffset;
    return b.fill(0, material, material + fields.keyBytes * 4000);
  };
  assert.ok(mask(mine).equals(mask(theirs)), label);
}

before(async () => {
  writeFileSync(images.path('plain.raw'), patternBytes(SIZE, 56));
  writeFileSync(images.path('latin1.txt'), Buffer.from([0x61, 0xff]));
  const objects = ['--object', 'secret,id=s0,data=old', '--object', 'secret,id=s1,data=new'];
  await Promise.all([
    qemuAsync(images, ['convert', ...objects, '-f', 'raw', 'plain.raw', '-O', 'luks', '-o', 'key-secret=s0,iter-time=1', 'base.luks']),
    qemuAsync(images, ['convert', ...objects, '-f', 'raw', 'plain.raw', '-O', 'qcow2', '-o', 'encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=1', 'base.qcow2']),
    qemuAsync(images, ['convert', ...objects, '-f', 'raw', 'plain.raw', '-O', 'qcow2', '-o', 'compat=0.10,encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=1', 'v2.qcow2']),
    // Another cipher, mode, IV generator and hash: the new slot's material is encrypted as its payload is.
    qemuAsync(images, ['convert', ...objects, '-f', 'raw', 'plain.raw', '-O', 'luks', '-o', 'key-secret=s0,iter-time=1,cipher-alg=twofish-256,cipher-mode=cbc,ivgen-alg=essiv,hash-alg=sha1', 'twofish.luks']),
  ]);
  // The same images with a second slot (1) holding s1, added by qemu.
  await Promise.all((['luks', 'qcow2'] as const).map((kind) => {
    copyFileSync(images.path(`base.${kind}`), images.path(`two.${kind}`));
    return qemuAsync(images, amendArgs(kind, `two.${kind}`, 'state=active,new-secret=s1,iter-time=1'));
  }));
  // Every slot in use: slot 0's fields and material copied into the other seven (each opens with s0).
  const full = readFileSync(images.path('base.luks'));
  const fields = luksKeyFields(full.subarray(0, 592));
  const materialLength = fields.keyBytes * 4000;
  for (let i = 1; i < 8; i++) {
    full.copy(full, 208 + i * 48, 208, 208 + 40);
    full.copy(full, fields.slots[i].keyOffset, fields.slots[0].keyOffset, fields.slots[0].keyOffset + materialLength);
  }
  writeFileSync(images.path('full.luks'), full);
});

after(() => images.remove());

let refusals = 0;
/**
 * An oracle and instar (in-process, that version's profile) amend copies of `image`: the same
 * outcome, nothing written. 10.0 every time, 7.2 every other time: the two agree on all of these
 * (measured), and each run costs the suite time.
 */
async function sameRefusal(kind: Kind, image: string, list: string, extra: string[] = [], timed = false): Promise<void> {
  const label = `${image} -o ${list} ${extra.join(' ')}`;
  const original = readFileSync(images.path(image));
  const strip = (r: RunResult) => ({ stdout: r.stdout, stderr: timed ? r.stderr.replace(/\d{4,}/g, 'N') : r.stderr, status: r.status });
  // A `timed` case makes qemu measure PBKDF2 for a second of CPU: 10.0 alone.
  for (const version of refusals++ % 2 === 0 && !timed ? VERSIONS : (['10.0'] as const)) {
    const theirs = copy(image);
    const expected = strip(oracle(version, amendArgs(kind, theirs, list, extra)));
    assert.notEqual(expected.status, 0, `${label}: qemu-img ${version} succeeded`);
    const ours = copy(image);
    const got = strip(await runInProcess(['--sandbox=none', `--qemu-version=${version}`, ...amendArgs(kind, ours, list, extra)], images.dir));
    assert.deepEqual(got, expected, `${label} (${version})`);
    assert.ok(readFileSync(images.path(ours)).equals(original), `${label}: instar wrote to the image`);
  }
}

test('refusals: the same messages and exit statuses as qemu-img, nothing written', async () => {
  const cases: [string, string, string[]?][] = [
    ['base', 'new-secret=s1'],
    ['base', 'state=foo,new-secret=s1'],
    ['base', 'state,new-secret=s1'],
    ['base', 'state=active'],
    ['base', 'state=active,new-secret=s1,old-secret=s0'],
    ['base', 'state=active,new-secret=s1,keyslot=0'],
    ['base', 'state=active,new-secret=s1,keyslot=8'],
    ['base', 'state=active,new-secret=s1,keyslot=-1'],
    ['base', 'state=active,new-secret=s1,keyslot=4294967296'],
    ['base', 'state=active,new-secret=s1,keyslot=18446744073709551615'],
    ['base', 'state=active,new-secret=s1,keyslot=abc'],
    ['base', 'state=active,new-secret=s9,iter-time=10'],
    ['base', 'state=active,new-secret=,iter-time=10'],
    ['base', 'state=active,new-secret=s3,iter-time=10', ['--object', 'secret,id=s3,file=latin1.txt']],
    ['base', 'state=inactive,new-secret=s1'],
    ['base', 'state=inactive,iter-time=10'],
    ['base', 'state=inactive'],
    ['base', 'state=inactive,keyslot=1'],
    ['base', 'state=inactive,keyslot=4294967297'],
    ['base', 'state=inactive,keyslot=-1'],
    ['base', 'state=inactive,keyslot=010'],
    ['base', 'state=inactive,keyslot=0x7'],
    ['base', 'state=inactive,keyslot=-9223372036854775809'],
    ['base', 'state=inactive,keyslot=0'],
    ['base', 'state=inactive,old-secret=s0'],
    ['base', 'state=inactive,old-secret=s2'],
    ['base', 'state=inactive,old-secret=s9'],
    ['two', 'state=inactive,old-secret=s2,keyslot=1'],
    ['two', 'state=inactive,old-secret=s1,keyslot=9'],
    ['two', 'state=active,new-secret=s2,keyslot=1'],
  ];
  for (const [image, list, extra] of cases) await sameRefusal('luks', `${image}.luks`, list, extra);
  for (const [image, list] of cases.filter((_, i) => i % 3 === 0)) await sameRefusal('qcow2', `${image}.qcow2`, list);
  await sameRefusal('luks', 'full.luks', 'state=active,new-secret=s1,iter-time=10');
  await sameRefusal('luks', 'full.luks', 'state=inactive,old-secret=s0');
  // The iteration count overflows (qemu's numbers are its machine's timing: digits masked), with
  // the hint qemu prints without a newline.
  await sameRefusal('luks', 'base.luks', 'state=active,new-secret=s1,iter-time=-1', ['-p'], true);
  await sameRefusal('qcow2', 'base.qcow2', 'state=active,new-secret=s1,iter-time=100000000000', [], true);
  // An encrypted image opened without its key, or with a wrong one: qemu's open fails first.
  const file = copy('base.qcow2');
  for (const version of VERSIONS) {
    for (const args of [['-o', 'encrypt.state=active,encrypt.new-secret=s1', file], ['-o', 'encrypt.state=active,encrypt.new-secret=s1', '--image-opts', FORMATS.qcow2.opts(file, 's2')]]) {
      const expected = oracle(version, ['amend', ...OBJECTS, ...args]);
      const got = await runInProcess(['--sandbox=none', `--qemu-version=${version}`, 'amend', ...OBJECTS, ...args], images.dir);
      assert.deepEqual(got, { ...expected, signal: null }, args.join(' '));
      assert.equal(expected.status, 1);
    }
  }
});

test('adding a slot: both oracles open the image with the new secret and the old one; info as after qemu\'s amend', async () => {
  for (const kind of ['luks', 'qcow2'] as const) {
    const ours = copy(`base.${kind}`);
    const theirs = copy(`base.${kind}`);
    const r = runInstar(amendArgs(kind, ours, 'state=active,new-secret=s1,iter-time=1', ['-p']), { cwd: images.dir });
    assert.deepEqual({ status: r.status, stderr: r.stderr }, { status: 0, stderr: '' }, kind);
    const q = oracle('7.2', amendArgs(kind, theirs, 'state=active,new-secret=s1,iter-time=1', ['-p']));
    assert.equal(r.stdout, q.stdout, `${kind}: -p output`);
    assert.deepEqual(slotsInfo(kind, ours), slotsInfo(kind, theirs), kind);
    sameButSlot(ours, theirs, 1, true, kind);
    assert.ok(opensWith(kind, ours, 's1') && opensWith(kind, ours, 's0'), kind);
    assert.ok(!opensWith(kind, ours, 's2'), kind);
    // qemu amends instar's image in turn: slot 0 erased by its passphrase, s1 alone opens it.
    const erased = oracle('10.0', amendArgs(kind, ours, 'state=inactive,old-secret=s0'));
    assert.equal(erased.status, 0, erased.stderr);
    assert.ok(opensWith(kind, ours, 's1') && !opensWith(kind, ours, 's0'), kind);
  }
  const twofish = copy('twofish.luks');
  // iter-time=0: qemu's floor of 1000 iterations.
  assert.equal((await runInProcess(['--sandbox=none', ...amendArgs('luks', twofish, 'state=active,new-secret=s1,iter-time=0')], images.dir)).status, 0);
  assert.ok(opensWith('luks', twofish, 's1') && opensWith('luks', twofish, 's0'), 'twofish-256-cbc-essiv:sha256, sha1');
  assert.equal(JSON.parse(oracle('10.0', ['info', '--output=json', twofish]).stdout)['format-specific'].data.slots[1].iters, 1000);
  // A named slot, and an active one overwritten with --force.
  const named = copy('base.luks');
  assert.equal((await runInProcess(['--sandbox=none', ...amendArgs('luks', named, 'state=active,new-secret=s2,keyslot=5,iter-time=1')], images.dir)).status, 0);
  assert.deepEqual((slotsInfo('luks', named) as { slots: { active: boolean }[] }).slots.map((s) => s.active), [true, false, false, false, false, true, false, false]);
  assert.ok(opensWith('luks', named, 's2'));
  const forced = copy('two.qcow2');
  const f = await runInProcess(['--sandbox=none', ...amendArgs('qcow2', forced, 'state=active,new-secret=s2,keyslot=1,iter-time=1', ['--force'])], images.dir);
  assert.equal(f.status, 0, f.stderr);
  assert.ok(opensWith('qcow2', forced, 's2') && !opensWith('qcow2', forced, 's1') && opensWith('qcow2', forced, 's0'));
});

test('erasing slots: the LUKS header byte-identical to qemu\'s, only the slot\'s key material changed', async () => {
  const cases: [Kind, string, string, string[]][] = [
    ['luks', 'two', 'state=inactive,keyslot=1', []],
    ['qcow2', 'two', 'state=inactive,keyslot=1', []],
    ['luks', 'two', 'state=inactive,old-secret=s0', []],
    ['qcow2', 'two', 'state=inactive,old-secret=s1', []],
    ['luks', 'base', 'state=inactive,keyslot=0', ['--force']],
    ['luks', 'two', 'state=inactive,keyslot=3', ['--force']],
  ];
  for (const [kind, image, list, extra] of cases) {
    const label = `${image}.${kind} -o ${list}`;
    const source = readFileSync(images.path(`${image}.${kind}`));
    const ours = copy(`${image}.${kind}`);
    const theirs = copy(`${image}.${kind}`);
    const r = runInstar(amendArgs(kind, ours, list, extra), { cwd: images.dir });
    assert.deepEqual({ status: r.status, stderr: r.stderr, stdout: r.stdout }, { status: 0, stderr: '', stdout: '' }, label);
    const q = oracle('10.0', amendArgs(kind, theirs, list, extra));
    assert.equal(q.status, 0, q.stderr);
    const base = luksBase(ours);
    const mine = readFileSync(images.path(ours));
    const qemus = readFileSync(images.path(theirs));
    assert.ok(mine.subarray(base, base + 592).equals(qemus.subarray(base, base + 592)), `${label}: LUKS header`);
    // Outside the header, only the erased slots' material differs from the source, where qemu's does too.
    assert.deepEqual(differences(source, mine).filter(([s]) => s >= base + 592), differences(source, qemus).filter(([s]) => s >= base + 592), label);
  }
  const opened = copy('two.luks');
  assert.equal(runInstar(amendArgs('luks', opened, 'state=inactive,keyslot=1'), { cwd: images.dir }).status, 0);
  assert.ok(opensWith('luks', opened, 's0') && !opensWith('luks', opened, 's1'));
});

/** Checks in-process that each slot the header of `file` calls active opens with its expected secret. */
function activeSlotsOpen(file: string, base: number, expected: Record<number, SecretId>): void {
  const image = readFileSync(images.path(file));
  luksKeyFields(image.subarray(base, base + 592)).slots.forEach((slot, i) => {
    if (!slot.active) return;
    // A copy with slot i the only active one: it opens only if that slot opens with its secret.
    const single = Buffer.from(image);
    for (let j = 0; j < 8; j++) if (j !== i) single.writeUInt32BE(0xdead, base + 208 + j * 48);
    writeFileSync(images.path('single.img'), single);
    const fd = openSync(images.path('single.img'), 'r');
    try {
      findDriver(base === 0 ? 'luks' : 'qcow2')!.open(new FdDevice(fd, false), { writable: false, key: Buffer.from(SECRETS[expected[i]]), keyRequired: true, readsData: true });
    } finally {
      closeSync(fd);
    }
  });
}

test('every prefix of its writes leaves each active slot opening with its passphrase', () => {
  const cases: [Kind, string, string, Record<number, SecretId>][] = [
    ['luks', 'base', 'state=active,new-secret=s1,iter-time=1', { 0: 's0', 1: 's1' }],
    ['qcow2', 'base', 'state=active,new-secret=s1,iter-time=1', { 0: 's0', 1: 's1' }],
    ['luks', 'two', 'state=inactive,old-secret=s1', { 0: 's0', 1: 's1' }],
    ['qcow2', 'two', 'state=inactive,keyslot=0', { 0: 's0', 1: 's1' }],
  ];
  for (const [kind, image, list, expected] of cases) {
    const ctx: AmendContext = {
      force: false,
      secrets: new Map(Object.entries(SECRETS).map(([id, data]) => [id, Buffer.from(data)])),
      key: Buffer.from(SECRETS.s0),
      optionList: optionList(kind, list),
    };
    const values = new Map(optionList(kind, list).split(',').map((o) => o.split('=') as [string, string]));
    const file = copy(`${image}.${kind}`);
    const fd = openSync(images.path(file), 'r');
    let steps;
    try {
      const dev = new FdDevice(fd, false);
      const driver = findDriver(kind)!;
      const plan = driver.amend!.plan(dev, driver.open(dev, { writable: false, key: ctx.key, keyRequired: true, readsData: true }), values, ctx);
      assert.ok('steps' in plan && !plan.error, `${kind} ${list}`);
      steps = plan.steps;
    } finally {
      closeSync(fd);
    }
    const base = luksBase(file);
    const checked = new Set<string>();
    for (let k = 0; k <= writeCount(steps); k++) {
      const crashed = copy(`${image}.${kind}`);
      const out = openSync(images.path(crashed), 'r+');
      try {
        applyRepair(new FdDevice(out, true), steps, { stopAfterWrites: k });
      } finally {
        closeSync(out);
      }
      // The header and the active slots' material decide what opens: each such state is tried once.
      const bytes = readFileSync(images.path(crashed));
      const fields = luksKeyFields(bytes.subarray(base, base + 592));
      const state = md5(Buffer.concat([bytes.subarray(base, base + 592), ...fields.slots.filter((sl) => sl.active).map((sl) => bytes.subarray(base + sl.keyOffset, base + sl.keyOffset + fields.keyBytes * 4000))]));
      if (checked.has(state)) continue;
      checked.add(state);
      activeSlotsOpen(crashed, base, expected);
    }
  }
});

test('LUKS2 volumes, which qemu-img cannot open, are refused with nothing written', async () => {
  const file = 'v2.luks2';
  images.sparse(file, 20 * 1024 * 1024);
  writeFileSync(images.path('v2.key'), SECRETS.s0);
  await cryptsetup(images, ['luksFormat', '-q', '--type', 'luks2', '--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000', '--key-file', 'v2.key', file]);
  const before = readFileSync(images.path(file));
  const r = await runInProcess(['--sandbox=none', ...amendArgs('luks', file, 'state=active,new-secret=s1,iter-time=1')], images.dir);
  assert.deepEqual(r, { stdout: '', stderr: 'qemu-img: instar cannot amend LUKS2 volumes (qemu-img cannot open them); nothing was written\n', status: 1, signal: null });
  assert.ok(readFileSync(images.path(file)).equals(before));
});

test('qcow2: key slots among other changes, in qemu\'s order; the files differ only in the new slot', async () => {
  const add = 'encrypt.state=active,encrypt.new-secret=s1,encrypt.iter-time=1';
  const cases: [string, string, string[], boolean][] = [
    ['base', `${add},lazy_refcounts=on,size=2M`, [], true],
    ['base', `${add},refcount_bits=8`, ['-p'], true],
    // A version 2 image: the upgrade, then the key slot (-p across both operations).
    ['v2', `${add},compat=1.1`, ['-p'], true],
    // qemu fails after the upgrade's header write, then after it wrote the key slot.
    ['v2', 'encrypt.state=active,encrypt.new-secret=s1,encrypt.keyslot=0,compat=1.1', ['-p'], false],
    ['v2', `${add},lazy_refcounts=on`, [], true],
    ['base', 'encrypt.state=active,encrypt.new-secret=s1,encrypt.keyslot=0,lazy_refcounts=on', [], false],
    ['two', 'encrypt.state=inactive,encrypt.keyslot=1,lazy_refcounts=on', [], false],
  ];
  for (const [image, list, extra, added] of cases) {
    const label = `${image}.qcow2 -o ${list}`;
    const ours = copy(`${image}.qcow2`);
    const theirs = copy(`${image}.qcow2`);
    const args = (file: string) => ['amend', ...OBJECTS, ...extra, '-o', list, '--image-opts', FORMATS.qcow2.opts(file, 's0')];
    const got = await runInProcess(['--sandbox=none', '--qemu-version=10.0', ...args(ours)], images.dir);
    const expected = oracle('10.0', args(theirs));
    assert.deepEqual(got, { ...expected, signal: null }, label);
    sameButSlot(ours, theirs, 1, added, label);
    if (added) assert.ok(opensWith('qcow2', ours, 's1'), label);
  }
});

/** A copy of `image` whose crypto area ends where slot 1's key material starts (a hostile length). */
function shortArea(image: string): string {
  const file = copy(image);
  const b = readFileSync(images.path(file));
  for (let at = b.readUInt32BE(100); ;) {
    if (b.readUInt32BE(at) === 0x0537be77) {
      const fields = luksKeyFields(b.subarray(Number(b.readBigUInt64BE(at + 8)), Number(b.readBigUInt64BE(at + 8)) + 592));
      b.writeBigUInt64BE(BigInt(fields.slots[1].keyOffset), at + 16);
      break;
    }
    at += 8 + Math.ceil(b.readUInt32BE(at + 4) / 8) * 8;
  }
  writeFileSync(images.path(file), b);
  return file;
}

test('qcow2: key material outside the crypto area fails where qemu\'s header write function fails, the same bytes written', async () => {
  const cases: [string, string][] = [
    ['base.qcow2', 'encrypt.state=active,encrypt.new-secret=s1,encrypt.iter-time=1'],
    // The header is written, then the first wipe fails.
    ['two.qcow2', 'encrypt.state=inactive,encrypt.keyslot=1'],
    ['two.qcow2', 'encrypt.state=inactive,encrypt.old-secret=s1'],
  ];
  for (const [image, list] of cases) {
    const source = shortArea(image);
    const ours = copy(source);
    const theirs = copy(source);
    const args = (file: string) => ['amend', ...OBJECTS, '-o', list, '--image-opts', FORMATS.qcow2.opts(file, 's0')];
    const got = await runInProcess(['--sandbox=none', '--qemu-version=10.0', ...args(ours)], images.dir);
    const expected = oracle('10.0', args(theirs));
    assert.deepEqual(got, { ...expected, signal: null }, list);
    assert.equal(got.status, 1, list);
    assert.ok(readFileSync(images.path(ours)).equals(readFileSync(images.path(theirs))), `${list}: the same bytes written`);
  }
});
