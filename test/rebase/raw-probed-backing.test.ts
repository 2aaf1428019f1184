// A safe rebase without -F onto a new backing file that qemu probes as raw (a fixed VHD, whose
// footer qemu's probe does not see; a plain raw file). qemu opens it as raw, copies into the top
// what differs, then fails to name it in the header ("backing format must be specified": the
// block layer wants a format) and exits 1 with the top changed. instar reads no file as raw
// unasked: it prints qemu's words and status and writes nothing. Left: with -p, qemu prints its
// copy loop's percentages before the last line; instar prints 0% and 100% only.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { VERSIONS } from '../helpers/oracles.ts';
import { instarRun, qemuRun, tempDir } from '../dd/helpers.ts';

let dir = '';
let cleanup = () => {};
const p = (name: string) => join(dir, name);

before(() => {
  ({ dir, cleanup } = tempDir('instar-rebase-raw-probe-'));
  const ok = (r: { status: number | null; stderr: string }) => assert.equal(r.status, 0, r.stderr);
  ok(qemuRun('10.0', ['create', '-q', '-f', 'vpc', '-o', 'subformat=fixed', p('fixed.vhd'), '1M']));
  ok(qemuRun('10.0', ['-f', 'vpc', '-c', 'write -P 9 0 64k', p('fixed.vhd')], undefined, 'qemu-io'));
  writeFileSync(p('plain.raw'), Buffer.alloc(1024 * 1024, 5));
  ok(qemuRun('10.0', ['create', '-q', '-f', 'vmdk', p('keep.vmdk'), '1M']));
  ok(qemuRun('10.0', ['create', '-q', '-f', 'qcow2', p('keep.qcow2'), '1M']));
});
after(() => cleanup());

test('safe rebase without -F onto a file qemu probes as raw: qemu\'s words and status, nothing written', async () => {
  for (const version of VERSIONS) {
    for (const top of ['vmdk', 'qcow2']) {
      for (const backing of ['fixed.vhd', 'plain.raw']) {
        const image = p(`top.${top}`);
        const before = readFileSync(p(`keep.${top}`));
        const args = ['rebase', '-b', backing, image];
        const label = `${version}: rebase -b ${backing} (${top} top)`;
        copyFileSync(p(`keep.${top}`), image);
        const q = qemuRun(version, args, dir);
        assert.equal(q.stderr, `qemu-img: Could not change the backing file to '${backing}': backing format must be specified\n`, label);
        assert.notDeepEqual(readFileSync(image), before, `${label}: qemu copied into the top before failing`);
        for (const sandboxed of top === 'vmdk' ? [false, true] : [false]) {
          copyFileSync(p(`keep.${top}`), image);
          const i = await instarRun(version, args, { sandboxed, cwd: dir });
          assert.equal(i.stderr, q.stderr, `${label} sandboxed=${sandboxed}`);
          assert.equal(i.stdout, q.stdout, label);
          assert.equal(i.status, q.status, label);
          assert.deepEqual(readFileSync(image), before, `${label}: instar wrote nothing`);
        }
      }
    }
  }
});

test('with -F the probe plays no part, and a file that does not open is still named as such', async () => {
  for (const version of VERSIONS) {
    for (const [top, args] of [['qcow2', ['-F', 'raw', '-b', 'fixed.vhd']], ['vmdk', ['-b', 'missing.vhd']]] as const) {
      const line = ['rebase', ...args, p(`top.${top}`)];
      const label = `${version}: ${line.join(' ')}`;
      copyFileSync(p(`keep.${top}`), p(`top.${top}`));
      const q = qemuRun(version, line, dir);
      copyFileSync(p(`top.${top}`), p(`qemu.${top}`));
      copyFileSync(p(`keep.${top}`), p(`top.${top}`));
      const i = await instarRun(version, line, { cwd: dir });
      assert.equal(i.stderr, q.stderr, label);
      assert.equal(i.status, q.status, label);
      // -F raw: both copy and name the file; the two tops read the same through their new backing.
      if (top === 'qcow2') assert.equal(qemuRun(version, ['compare', p('qemu.qcow2'), p('top.qcow2')], dir).status, 0, label);
    }
  }
});
