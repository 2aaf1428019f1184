// convert -C (copy offloading): qemu copies the block-status data runs with copy_range, so zeros
// written as data stay allocated in the target (without -C its zero detection leaves them out);
// where its drivers have no copy_range (vmdk sources, compressed clusters, other targets) it
// copies as without -C. Compared with both oracles: messages, the target's bytes and its map.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runInstar, runQemu, VERSIONS } from '../helpers/oracles.ts';
import { qemu, qemuIo, tempDir } from './helpers.ts';

const MiB = 1024 * 1024;
let dir: string;
let cleanup: () => void;
before(() => {
  ({ dir, cleanup } = tempDir());
  // Zeros written as data (what -C keeps and zero detection drops), data, a zero cluster.
  qemu(['create', '-q', '-f', 'qcow2', join(dir, 'plain.qcow2'), '4M']);
  qemuIo(join(dir, 'plain.qcow2'), ['write -P 0 0 1M', 'write -P 5 1M 64k', 'write -z 2M 64k']);
  qemu(['convert', '-c', '-O', 'qcow2', join(dir, 'plain.qcow2'), join(dir, 'compressed.qcow2')]);
  qemu(['create', '-q', '-f', 'qcow2', '-b', 'plain.qcow2', '-F', 'qcow2', join(dir, 'over.qcow2')]);
  qemuIo(join(dir, 'over.qcow2'), ['write -P 0 3M 64k']);
  qemu(['convert', '-O', 'vmdk', join(dir, 'plain.qcow2'), join(dir, 'plain.vmdk')]);
  writeFileSync(join(dir, 'disk.raw'), '');
  truncateSync(join(dir, 'disk.raw'), 3 * MiB);
  qemuIo(join(dir, 'disk.raw'), ['write -P 0 64k 512k', 'write -P 7 1M 4k'], 'raw');
});
after(() => cleanup());

function side(who: string, args: string[]): { text: string; bytes?: Buffer; map?: string } {
  const cwd = join(dir, who);
  rmSync(cwd, { recursive: true, force: true });
  mkdirSync(cwd);
  const full = ['convert', '-C', ...args.map((a) => (/\.(raw|qcow2|vmdk)$/.test(a) ? join(dir, a) : a)), 'out'];
  const r = who.startsWith('instar') ? runInstar([...full, '--qemu-version', who.slice(7)], { cwd }) : runQemu(who as (typeof VERSIONS)[number], full, { cwd });
  const out = join(cwd, 'out');
  if (!existsSync(out)) return { text: `${r.status}\n${r.stdout}${r.stderr}` };
  const format = args[args.indexOf('-O') + 1];
  return { text: `${r.status}\n${r.stdout}${r.stderr}`, bytes: readFileSync(out), map: runQemu('7.2', ['map', '--output=json', '-f', format, out]).stdout };
}

const CASES: string[][] = [
  ['-f', 'raw', '-O', 'raw', 'disk.raw'],
  ['-f', 'raw', '-O', 'qcow2', 'disk.raw'],
  ['-O', 'raw', 'plain.qcow2'],
  ['-O', 'qcow2', '-o', 'cluster_size=4096', 'plain.qcow2'],
  ['-O', 'raw', 'compressed.qcow2'],
  ['-O', 'qcow2', 'over.qcow2'],
  ['-O', 'raw', '-p', 'over.qcow2'],
  ['-O', 'raw', 'plain.vmdk'],
  ['-f', 'raw', '-O', 'qed', 'disk.raw'],
  ['-O', 'raw', '-c', 'plain.qcow2'],
  ['-O', 'raw', '-S', '4k', 'plain.qcow2'],
];

for (const args of CASES) {
  test(`convert -C ${args.join(' ')}: as qemu-img 7.2 and 10.0`, () => {
    for (const version of VERSIONS) {
      const q = side(version, args);
      const i = side(`instar-${version}`, args);
      assert.equal(i.text, q.text, `${version}: status and messages`);
      assert.equal(i.bytes === undefined, q.bytes === undefined, `${version}: output file left`);
      if (q.bytes && i.bytes) {
        assert.ok(i.bytes.equals(q.bytes), `${version}: output bytes`);
        assert.equal(i.map, q.map, `${version}: output allocation`);
      }
    }
  });
}
