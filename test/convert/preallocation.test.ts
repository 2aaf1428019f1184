// convert into a raw target with -o preallocation=falloc|full, and -O file (qemu's file protocol
// named as the output format): qemu's file protocol makes the new target whole before the copy
// (falloc: reserved blocks, unwritten extents that read as zeros and that SEEK_DATA, so map,
// calls holes; full: zeros written), then writes the data. Compared with both oracles: messages,
// exit status, the output's bytes and its allocation as qemu-img map shows it.
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
  qemu(['create', '-q', '-f', 'qcow2', join(dir, 'src.qcow2'), '10M']);
  qemuIo(join(dir, 'src.qcow2'), ['write -P 7 1M 1M', 'write -z 3M 1M', 'write -P 9 9M 64k']);
  writeFileSync(join(dir, 'src.raw'), '');
  truncateSync(join(dir, 'src.raw'), 6 * MiB + 1000);
  qemuIo(join(dir, 'src.raw'), ['write -P 4 0 64k', 'write -P 5 5M 512k'], 'raw');
});
after(() => cleanup());

/** Runs the convert in a directory of its own, so that both sides name the same 'out'. */
function side(who: string, args: string[]): { text: string; bytes?: Buffer; map?: string } {
  const cwd = join(dir, who);
  rmSync(cwd, { recursive: true, force: true });
  mkdirSync(cwd);
  const full = ['convert', ...args.map((a) => (a.startsWith('src.') ? join(dir, a) : a)), 'out'];
  const r = who.startsWith('instar') ? runInstar([...full, '--qemu-version', who.slice(7)], { cwd }) : runQemu(who as (typeof VERSIONS)[number], full, { cwd });
  const out = join(cwd, 'out');
  if (!existsSync(out)) return { text: `${r.status}\n${r.stdout}${r.stderr}` };
  const map = runQemu('7.2', ['map', '--output=json', '-f', 'raw', out]).stdout;
  return { text: `${r.status}\n${r.stdout}${r.stderr}`, bytes: readFileSync(out), map };
}

const CASES: string[][] = [
  ['-O', 'raw', '-o', 'preallocation=falloc', 'src.qcow2'],
  ['-O', 'raw', '-o', 'preallocation=full', 'src.qcow2'],
  ['-f', 'raw', '-O', 'raw', '-o', 'preallocation=falloc', 'src.raw'],
  ['-f', 'raw', '-O', 'raw', '-o', 'preallocation=full,nocow=on', '-p', 'src.raw'],
  ['-O', 'raw', '-o', 'preallocation=falloc', '-S', '0', 'src.qcow2'],
  ['-O', 'file', 'src.qcow2'],
  ['-f', 'raw', '-O', 'file', 'src.raw'],
  ['-O', 'file', '-o', 'preallocation=falloc', 'src.qcow2'],
  ['-O', 'file', '-o', 'preallocation=metadata', 'src.qcow2'],
  ['-O', 'file', '-o', 'preallocation=bogus', 'src.qcow2'],
  ['-O', 'file', '-o', 'cluster_size=4k', 'src.qcow2'],
  ['-O', 'file', '-o', 'help'],
  ['-O', 'file', '-B', 'src.raw', 'src.qcow2'],
  ['-O', 'file', '-c', 'src.qcow2'],
  ['-O', 'file', '--bitmaps', 'src.qcow2'],
];

for (const args of CASES) {
  test(`convert ${args.join(' ')}: as qemu-img 7.2 and 10.0 make it`, () => {
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
