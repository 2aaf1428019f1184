// A dirty qcow2 (lazy refcounts cut short) with persistent bitmaps, opened for writing: qemu's open
// loads the bitmaps (marking those not in use), repairs the refcounts (check -r all's lines), and
// the command runs; the close stores the bitmaps. Two images: a writer killed while its bitmaps
// were in use (what a crash leaves: the bitmaps stay inconsistent, and resize refuses them after
// the repair), and one whose bitmaps were stored before the crash (not in use: marked and stored
// again). Output, exit status and file byte for byte against qemu-img 7.2 and 10.0 (snapshot -c:
// timestamps differ, so content and check), and the repair's write prefixes.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { VERSIONS, runQemu } from '../helpers/oracles.ts';
import { assertSameRun, planPrefix } from './repair-harness.ts';
import { assertPrefixesSafe, qemuOk } from './repair-more-matrix.ts';
import { readU64, setRefcount16, writeU64 } from './qcow2-edit.ts';
import { qcow2Driver } from '../../src/formats/qcow2/driver.ts';
import { checkQcow2 } from '../../src/formats/qcow2/check.ts';
import { repairQcow2, repairQcow2AtOpen } from '../../src/formats/qcow2/repair-refcounts.ts';
import { RepairDirs } from './fast-dirs.ts';
// In the long tier its unsandboxed instar runs launch the built CLI as before (check/instar-sync.ts).
import '../helpers/long.ts';

const dirs = new RepairDirs();
const images: Record<'inUse' | 'stored', Buffer> = { inUse: Buffer.alloc(0), stored: Buffer.alloc(0) };
const DIRTY = 1n;

/** A lazy-refcounts qcow2 with an enabled bitmap b1 and a disabled one b2. */
function withBitmaps(path: string): void {
  qemuOk(runQemu('10.0', ['create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on', path, '16M']));
  qemuOk(runQemu('10.0', ['bitmap', '--add', path, 'b1']));
  qemuOk(runQemu('10.0', ['bitmap', '--add', '--disable', path, 'b2']));
}

before(() => {
  const inUse = join(dirs.root, 'in-use.qcow2');
  withBitmaps(inUse);
  const killed = runQemu('10.0', ['-c', 'write -P 1 0 256k', '-c', 'write -P 2 4M 64k', '-c', 'sigraise 9', inUse], {}, 'qemu-io');
  assert.equal(killed.signal, 'SIGKILL');
  images.inUse = readFileSync(inUse);
  // Stored bitmaps (a clean close with b1's bits set), then the state of a crash before the
  // header's dirty bit was cleared: the data clusters' refcounts never written.
  const stored = join(dirs.root, 'stored.qcow2');
  withBitmaps(stored);
  qemuOk(runQemu('10.0', ['-c', 'write -P 1 0 256k', '-c', 'write -P 2 4M 64k', stored], {}, 'qemu-io'));
  const map = JSON.parse(runQemu('10.0', ['map', '--output=json', stored]).stdout) as { data: boolean; offset?: number }[];
  for (const e of map.filter((m) => m.data)) setRefcount16(stored, e.offset! / 65536, 0);
  writeU64(stored, 72, readU64(stored, 72) | DIRTY);
  images.stored = readFileSync(stored);
  for (const bytes of Object.values(images)) assert.equal(bytes.readBigUInt64BE(72) & DIRTY, DIRTY, 'the image is dirty');
});
after(() => dirs.remove());

const COMMANDS = [
  ['resize', 'x.qcow2', '+1M'],
  ['resize', '--shrink', 'x.qcow2', '8M'],
  ['bitmap', '--add', 'x.qcow2', 'b3'],
  ['bitmap', '--remove', 'x.qcow2', 'b1'],
  ['amend', '-o', 'lazy_refcounts=off', 'x.qcow2'],
  ['rebase', '-u', '-b', '', 'x.qcow2'],
  ['check', '-r', 'all', 'x.qcow2'],
  ['check', '-r', 'leaks', 'x.qcow2'],
];

test('writing commands on a dirty qcow2 with bitmaps: repaired at open, then the command, byte-identical to qemu-img', () => {
  let sawInconsistent = false;
  for (const v of VERSIONS) {
    for (const [name, bytes] of Object.entries(images)) {
      for (const [i, args] of COMMANDS.entries()) {
        const label = `qemu-img ${v} ${args.join(' ')} on the ${name} image`;
        const r = dirs.run(v, 'x.qcow2', bytes, args, { sandboxed: i === 0 && v === '10.0', viaEnv: true });
        assertSameRun(r, label);
        assert.match(r.qemu.stderr, /^ERROR cluster \d+ refcount=0 reference=1$/m, `${label}: qemu checks at open`);
        assert.ok(r.instarFile.equals(r.qemuFile), `${label}: the files differ`);
        if (args[0] !== 'check' || args[2] === 'all') assert.equal(r.instarFile.readBigUInt64BE(72) & DIRTY, 0n, `${label}: marked clean`);
        sawInconsistent ||= r.qemu.stderr.includes("Bitmap 'b1' is inconsistent");
      }
    }
  }
  assert.ok(sawInconsistent, 'resize refuses the bitmaps a crash left in use, after the repair');
});

test('snapshot -c on a dirty qcow2 with bitmaps: the same output, the same content, a clean image', () => {
  for (const v of VERSIONS) {
    for (const [name, bytes] of Object.entries(images)) {
      const label = `qemu-img ${v} snapshot -c on the ${name} image`;
      const r = dirs.run(v, 'x.qcow2', bytes, ['snapshot', '-c', 's1', 'x.qcow2']);
      assertSameRun(r, label);
      assert.equal(runQemu(v, ['check', r.instarPath]).status, 0, label);
      assert.equal(runQemu(v, ['compare', r.qemuPath, r.instarPath]).stdout, 'Images are identical.\n', label);
      const info = (p: string) => runQemu(v, ['info', '--output=json', p]).stdout.replace(/"(date-sec|date-nsec|vm-clock-nsec|filename|actual-size)": [^,\n]*/g, '');
      assert.equal(info(r.instarPath), info(r.qemuPath), `${label}: info`);
      assert.equal(r.instarFile.length, r.qemuFile.length, `${label}: the same layout`);
    }
  }
});

test('every prefix of the repairs leaves an image qemu-img check opens, no more damaged', () => {
  const path = join(dirs.root, 'prefix.qcow2');
  const atOpen = (image: Parameters<typeof repairQcow2>[0], dev: Parameters<typeof repairQcow2>[1], report: Parameters<typeof repairQcow2>[2]) => repairQcow2AtOpen(image, dev, report);
  const open = assertPrefixesSafe('open-time repair', path, images.inUse, (n) => planPrefix(path, images.inUse, n, qcow2Driver, checkQcow2, atOpen));
  assert.ok(open > 3, 'the open-time repair writes');
  // check -r all: the bitmaps marked in use, the repair, then the close storing them.
  const check = assertPrefixesSafe('check -r all', path, images.stored, (n) => planPrefix(path, images.stored, n, qcow2Driver, checkQcow2, repairQcow2));
  assert.ok(check > open, 'check -r all stores the bitmaps too');
});
