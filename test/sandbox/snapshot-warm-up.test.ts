// The ops' warm-up while a guest's startup snapshot is built (src/guest/warm-up.ts) must leave
// nothing in the snapshot but compiled code: no byte of its disks in the blob, Buffer's pool as
// it found it, and a guest started from the warmed blob answers every command as one started
// from the code cache (which never ran the warm-up), errors included.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { HOSTILE_GUEST, scratchDir, writeInput } from './helpers.ts';
import { runInstar, runQemu } from '../helpers/oracles.ts';
import { codeCachePath } from '../../src/host/sandbox/code-cache.ts';
import { productionGuestPath } from '../../src/host/sandbox/guest-path.ts';
import { snapshotFiles } from '../../src/host/sandbox/snapshot.ts';
import { WARM_UP_TEXT, warmUp, warmUpByte } from '../../src/guest/warm-up.ts';
import { ops } from '../../src/ops/registry.ts';

const scratch = scratchDir();
after(scratch.cleanup);

/** Where any 16 bytes of the warm-up's disk data are in `blob` (-1: nowhere). */
function warmUpDataAt(blob: Buffer): number {
  const data = Buffer.from(Array.from({ length: 2 * WARM_UP_TEXT.length }, (_, i) => warmUpByte(i)));
  for (let i = 0; i < WARM_UP_TEXT.length; i++) {
    const at = blob.indexOf(data.subarray(i, i + 16));
    if (at >= 0) return at;
  }
  return -1;
}

describe('guest snapshot warm-up', () => {
  it('no byte of its disks is in either blob (and the search finds them in a blob that keeps them)', () => {
    for (const bundle of [productionGuestPath(), HOSTILE_GUEST]) assert.equal(warmUpDataAt(readFileSync(snapshotFiles(bundle).blob)), -1, bundle);
    const keeper = writeInput(scratch.dir, 'keeper.cjs', [
      `const text = ${JSON.stringify(WARM_UP_TEXT)};`,
      'globalThis.kept = Uint8Array.from({ length: 4096 }, (_, i) => text.charCodeAt(i % text.length) ^ 0xff);',
      "require('node:v8').startupSnapshot.setDeserializeMainFunction(() => {});",
    ].join('\n'));
    const blob = join(scratch.dir, 'keeper.blob');
    const r = spawnSync(process.execPath, ['--snapshot-blob', blob, '--build-snapshot', keeper], { encoding: 'utf8', env: {}, cwd: '/', timeout: 60_000 });
    assert.equal(r.status, 0, r.stderr);
    assert.notEqual(warmUpDataAt(readFileSync(blob)), -1);
  });

  it("Buffer's pool is zeros from where the ops began to take from it, and they did take some", async () => {
    // A marker with room after it in its pool, so that the warm-up's own marker follows it there.
    let before = Buffer.allocUnsafe(1);
    while (before.byteOffset + 64 > before.buffer.byteLength) before = Buffer.allocUnsafe(1);
    await warmUp(ops);
    const after = Buffer.allocUnsafe(1);
    // Past this marker (the pool hands out 8-byte aligned slices), to the pool's end.
    const pools = after.buffer === before.buffer ? [new Uint8Array(before.buffer, before.byteOffset + 8)] : [new Uint8Array(before.buffer, before.byteOffset + 8), new Uint8Array(after.buffer)];
    assert.ok(after.buffer !== before.buffer || after.byteOffset > before.byteOffset + 64, 'the ops took nothing from the pool: this checks nothing');
    for (const bytes of pools) assert.equal(bytes.findIndex((b) => b !== 0), -1);
  });

  it('a guest from the warmed blob answers as one from the code cache: info, convert, check, map, errors', () => {
    const dir = scratch.dir;
    const make = (args: string[], tool: 'qemu-img' | 'qemu-io' = 'qemu-img') => {
      const r = runQemu('10.0', args, {}, tool);
      assert.equal(r.status, 0, `${tool} ${args.join(' ')}: ${r.stderr}`);
    };
    const raw = join(dir, 'disk.raw');
    writeFileSync(raw, Buffer.concat([Buffer.alloc(300 * 1024, 'instar'), Buffer.alloc(724 * 1024)]));
    const qcow2 = join(dir, 'disk.qcow2');
    make(['create', '-q', '-f', 'qcow2', qcow2, '1M']);
    make(['-f', 'qcow2', '-c', 'write -P 0x5a 0 300k', '-c', 'write -z 512k 64k', '-c', 'write -P 0x11 700k 64k', qcow2], 'qemu-io');
    for (const fmt of ['vmdk', 'vpc', 'vhdx']) make(['convert', '-f', 'raw', '-O', fmt, raw, join(dir, `disk.${fmt}`)]);
    writeInput(dir, 'junk.img', Buffer.alloc(4096, 'not an image '));
    const corrupt = Buffer.from(readFileSync(qcow2));
    corrupt.writeUInt32BE(0x7ff0, 40 + 4); // l1_table_offset's low half: unaligned
    writeInput(dir, 'corrupt.qcow2', corrupt);

    const out = join(dir, 'out.img');
    const commands: string[][] = [
      ['info', qcow2],
      ['info', '--output=json', join(dir, 'disk.vmdk')],
      ['info', '-f', 'raw', raw],
      ['info', raw],
      ['info', join(dir, 'junk.img')],
      ['info', join(dir, 'corrupt.qcow2')],
      ['check', qcow2],
      ['map', '--output=json', qcow2],
      ['convert', '-O', 'raw', qcow2, out],
      ['convert', '-O', 'raw', join(dir, 'disk.vhdx'), out],
      ['convert', '-O', 'raw', join(dir, 'disk.vpc'), out],
      ['convert', '-f', 'raw', '-O', 'qcow2', raw, out],
      ['convert', '-O', 'raw', join(dir, 'corrupt.qcow2'), out],
    ];
    // The code cache only: a copy of the production guest with no blob beside it.
    const cached = join(dir, 'guest.cjs');
    copyFileSync(productionGuestPath(), cached);
    copyFileSync(codeCachePath(productionGuestPath()), codeCachePath(cached));
    const starts = (guest: string) => /guest start: (snapshot|code cache) /.exec(runInstar(['--debug', 'info', qcow2], { env: { INSTAR_TEST_GUEST: guest } }).stderr)?.[1];
    assert.equal(starts(productionGuestPath()), 'snapshot');
    assert.equal(starts(cached), 'code cache');
    for (const args of commands) {
      const answers = [productionGuestPath(), cached].map((guest) => {
        rmSync(out, { force: true });
        const r = runInstar(args, { env: { INSTAR_TEST_GUEST: guest }, timeoutMs: 60_000 });
        return { status: r.status, stdout: r.stdout, stderr: r.stderr, out: existsSync(out) ? readFileSync(out).toString('base64') : undefined };
      });
      assert.deepEqual(answers[0], answers[1], args.join(' '));
    }
  });
});
