// convert -p on disks big enough for two copy guests (256 MiB and more), where the block status
// fails inside the second guest's part: qemu walks the whole disk's block status before its first
// progress line, so it prints only the opening 0.00 line and the error. The first guest must not
// have its lines printed while the second is still walking (they are held, then replayed once
// every guest has walked, which keeps a successful copy's lines as qemu's).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, ftruncateSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { qemu, qemuIo, tempDir } from './helpers.ts';
import { assertSameConvert, sameConvert } from './edge-compare.ts';
import { longTest } from '../helpers/long.ts';

const { dir, cleanup } = tempDir();
const at = (name: string) => join(dir, name);

before(() => {
  qemu(['create', '-q', '-f', 'parallels', at('good.hds'), '1M']);
  // 2^55 + 8192 sectors: the size wraps to 4 MiB and every size query fails (EFBIG).
  const bytes = readFileSync(at('good.hds'));
  bytes.writeBigUInt64LE(2n ** 55n + 0x2000n, 36);
  writeFileSync(at('efbig.hds'), bytes);
  // 512 MiB over it, its first 300 MiB held by the overlay (zero clusters and some data): the
  // first hole, whose block status fails, is at 300 MiB, in the second guest's part.
  qemu(['create', '-q', '-f', 'qcow2', '-u', '-b', 'efbig.hds', '-F', 'parallels', at('late.qcow2'), '512M']);
  qemuIo(at('late.qcow2'), ['write -z 0 300M', 'write -P 0x33 1M 8M', 'write -P 0x44 100M 4M']);
  // The same failure in the first guest's part (at 8 MiB).
  qemu(['create', '-q', '-f', 'qcow2', '-u', '-b', 'efbig.hds', '-F', 'parallels', at('early.qcow2'), '512M']);
  qemuIo(at('early.qcow2'), ['write -P 0x33 0 8M', 'write -z 8M 1M', 'write -P 0x44 400M 4M']);
  // A copy that succeeds, with data in both parts.
  qemu(['create', '-q', '-f', 'qcow2', at('ok.qcow2'), '512M']);
  qemuIo(at('ok.qcow2'), ['write -P 0x33 1M 8M', 'write -P 0x44 100M 4M', 'write -P 0x55 400M 6M']);
});
after(cleanup);

const existing = (target: string) => writeFileSync(target, Buffer.alloc(8192, 0xa5));
const sparseGiB = (target: string) => {
  const fd = openSync(target, 'w');
  ftruncateSync(fd, 1024 * 1024 * 1024);
  closeSync(fd);
};

describe('a block status that fails in the second guest\'s part', () => {
  // Long tier: three variants of the same failure (each runs both programs over 300 MiB and more).
  test('-p into a new target: only the opening line', async () => {
    const { result } = await sameConvert({ dir, args: ['-p', '-O', 'raw', { source: 'late.qcow2' }] });
    assert.equal(result.stdout, '    (0.00/100%)\r\n');
    assert.equal(result.stderr, 'qemu-img: error while reading block status at offset 314572800: File too large\n');
  });
  longTest('-p into an existing target', () => assertSameConvert({ dir, args: ['-p', '-O', 'raw', { source: 'late.qcow2' }], prepare: existing }));
  longTest('-p -n', () => assertSameConvert({ dir, args: ['-p', '-n', '-O', 'raw', { source: 'late.qcow2' }], prepare: sparseGiB }));
  // Long tier: -S 0 fails the same walk before any write (the first case pins it).
  longTest('-p -S 0', () => assertSameConvert({ dir, args: ['-p', '-S', '0', '-O', 'raw', { source: 'late.qcow2' }] }));
  test('without -p', () => assertSameConvert({ dir, args: ['-O', 'raw', { source: 'late.qcow2' }] }));
  longTest('-p, the failing image second', () => assertSameConvert({ dir, args: ['-p', '-O', 'raw', { source: 'ok.qcow2' }, { source: 'late.qcow2' }] }));
});

describe('for reference', () => {
  test('-p, the failure in the first guest\'s part', () => assertSameConvert({ dir, args: ['-p', '-O', 'raw', { source: 'early.qcow2' }] }));
  test('-p, a copy that succeeds', async () => {
    const { result } = await sameConvert({ dir, args: ['-p', '-O', 'raw', { source: 'ok.qcow2' }] });
    assert.equal(result.status, 0);
  });
});
