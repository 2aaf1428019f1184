// amend -o compat=1.1 of a version 2 image whose snapshot entries carry no extra data (as qemu
// before 1.x wrote them; made here by stripping the extra data qemu-img writes today): qemu
// rewrites the snapshot table before the header, alone and before a refcount width change or a
// truncate. Files, -p output and exit status identical to qemu-img 7.2 and 10.0; every prefix of
// instar's writes leaves an image qemu-img check accepts (leaks at most).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VERSIONS, runQemu } from '../helpers/oracles.ts';
import { TwinDirs, assertSameOutcome } from '../rebase/harness.ts';
import { sweepCrashes } from './harness.ts';

const dirs = new TwinDirs();
const scratch = mkdtempSync(join(tmpdir(), 'instar-amend-up-'));
const images: Record<string, Buffer> = {};

/** The snapshot table rewritten in place with every entry's extra data left out (extra_data_size 0). */
function withoutExtraData(image: Buffer): Buffer {
  const out = Buffer.from(image);
  const count = out.readUInt32BE(60);
  const start = Number(out.readBigUInt64BE(64));
  const entries: Buffer[] = [];
  let at = start;
  for (let i = 0; i < count; i++) {
    const extra = out.readUInt32BE(at + 36);
    const idLength = out.readUInt16BE(at + 12);
    const nameLength = out.readUInt16BE(at + 14);
    const head = Buffer.from(out.subarray(at, at + 40));
    head.writeUInt32BE(0, 36);
    const names = out.subarray(at + 40 + extra, at + 40 + extra + idLength + nameLength);
    const entry = Buffer.concat([head, names]);
    entries.push(Buffer.concat([entry, Buffer.alloc((8 - (entry.length % 8)) % 8)]));
    at += Math.ceil((40 + extra + idLength + nameLength) / 8) * 8;
  }
  const table = Buffer.concat(entries);
  out.fill(0, start, Math.min(at, out.length));
  table.copy(out, start);
  return out;
}

/** A version 2 image with two snapshots (a shared cluster, one changed after the first). */
function build(name: string, opts: string): Buffer {
  const path = join(scratch, name);
  assert.equal(runQemu('10.0', ['create', '-q', '-f', 'qcow2', '-o', `compat=0.10,${opts}`, path, '4M']).status, 0);
  for (const step of [['write -P 1 0 64k'], 'one', ['write -P 2 0 4k'], 'two']) {
    const r = typeof step === 'string' ? runQemu('10.0', ['snapshot', '-c', step, path]) : runQemu('10.0', ['-c', step[0], path], {}, 'qemu-io');
    assert.equal(r.status, 0, r.stderr);
  }
  const stripped = withoutExtraData(readFileSync(path));
  writeFileSync(path, stripped);
  // The crafted table is one qemu reads (its check passes, the entries list as before).
  assert.equal(runQemu('10.0', ['check', path]).status, 0);
  assert.match(runQemu('10.0', ['snapshot', '-l', path]).stdout, /\n1 +one .*\n2 +two /);
  return stripped;
}

before(() => {
  images.c64k = build('c64k.qcow2', 'cluster_size=65536');
  images.c512 = build('c512.qcow2', 'cluster_size=512');
});

after(() => {
  dirs.remove();
  rmSync(scratch, { recursive: true, force: true });
});

const CASES: [string, string][] = [
  ['c64k', 'compat=1.1'],
  ['c512', 'compat=1.1'],
  ['c512', 'compat=1.1,refcount_bits=8'],
  ['c64k', 'compat=1.1,lazy_refcounts=on,size=16M'],
];

test('amend -o compat=1.1 rewrites snapshot entries without extra data as qemu-img does', () => {
  for (const [image, options] of CASES) {
    for (const version of VERSIONS) {
      const files = { 'img.qcow2': images[image] };
      const r = dirs.run(version, files, ['amend', '-p', '-o', options, 'img.qcow2']);
      assertSameOutcome(r, Object.keys(files), `${options} (${image}, ${version})`);
    }
  }
});

test('amend -o compat=1.1 with a snapshot table to rewrite: every prefix of its writes leaves an image qemu-img checks with leaks at most', () => {
  sweepCrashes(scratch, 'upgrade', images.c512, { compat: '1.1' });
  sweepCrashes(scratch, 'upgrade-width', images.c512, { compat: '1.1', refcount_bits: '8' });
});
