// resize of a qcow2 image with an external data file, against qemu-img 7.2 and 10.0 (the hunt
// found instar refusing it): qemu cuts or grows the data file to the new disk size with the
// image (its data clusters are not counted in the image's refcounts, so a shrink only drops
// their entries); through the real sandbox once, the data file granted for writing by the host.
// A raw data file's growth (qemu maps the new area onto it) is still refused: nothing written.
// Then every prefix of a shrink's writes leaves an image qemu-img checks clean and reads.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { VERSIONS, runInstar, runQemu } from '../helpers/oracles.ts';
import { FdDevice } from '../../src/io/fd-device.ts';
import { resizeOp } from '../../src/ops/resize.ts';
import type { OpContext } from '../../src/ops/types.ts';
import { ResizeDirs, assertSameResize } from './harness.ts';

const dirs = new ResizeDirs();
const files: Record<string, Uint8Array> = {};
/** d.qcow2's first 3 MiB as the guest reads them. */
let guestHead: Buffer;

/** `name` with data file `data` (-o `options`), written by qemu-io; both files kept. */
function made(name: string, data: string, options: string, size: string, ...commands: string[]): void {
  const dir = dirs.path('build');
  mkdirSync(dir, { recursive: true });
  const created = runQemu('10.0', ['create', '-q', '-f', 'qcow2', '-o', `data_file=${data},${options}`, name, size], { cwd: dir });
  assert.equal(created.status, 0, created.stderr);
  const written = runQemu('10.0', ['-f', 'qcow2', ...commands.flatMap((c) => ['-c', c]), name], { cwd: dir }, 'qemu-io');
  assert.equal(written.status, 0, written.stderr + written.stdout);
  files[name] = readFileSync(join(dir, name));
  files[data] = readFileSync(join(dir, data));
}

before(() => {
  made('d.qcow2', 'd.data', 'data_file_raw=off,cluster_size=4k', '4M', 'write -P 3 0 64k', 'write -P 4 3M 64k');
  made('r.qcow2', 'r.data', 'data_file_raw=on,cluster_size=4k', '3M', 'write -P 3 0 64k', 'write -P 4 2M 1M');
  made('b.qcow2', 'b.data', 'data_file_raw=off', '3M', 'write -P 3 0 64k', 'write -P 4 2M 1M');
  assert.equal(runQemu('10.0', ['bitmap', '--add', 'b.qcow2', 'bm0'], { cwd: dirs.path('build') }).status, 0);
  files['b.qcow2'] = readFileSync(join(dirs.path('build'), 'b.qcow2'));
  assert.equal(runQemu('10.0', ['convert', '-f', 'qcow2', '-O', 'raw', 'd.qcow2', 'd.raw'], { cwd: dirs.path('build') }).status, 0);
  guestHead = readFileSync(join(dirs.path('build'), 'd.raw')).subarray(0, 3 << 20);
});
after(() => dirs.remove());

const CASES: [string[], boolean?][] = [
  // A new L1 table (4 KiB clusters: an L2 table spans 2 MiB), through the sandbox once.
  [['d.qcow2', '6M'], true],
  [['--shrink', 'd.qcow2', '3M']],
  [['--shrink', 'r.qcow2', '1M']],
  [['--shrink', 'b.qcow2', '1536k']],
  [['b.qcow2', '5M']],
];

for (const version of VERSIONS) {
  test(`resize of a qcow2 image with a data file matches qemu-img ${version}`, () => {
    for (const [args, sandboxed] of CASES) assertSameResize(dirs.run(version, files, args, { sandboxed: sandboxed && version === '10.0' }), `${version} resize ${args.join(' ')}`);
  });
}

test('growing a qcow2 image whose raw data file qemu would map is refused, nothing written', () => {
  const dir = dirs.path('raw-growth');
  mkdirSync(dir);
  for (const [name, bytes] of Object.entries(files)) writeFileSync(join(dir, name), bytes);
  const r = runInstar(['--sandbox=none', 'resize', 'r.qcow2', '2G'], { cwd: dir });
  assert.equal(r.status, 1);
  assert.equal(r.stderr, 'qemu-img: instar cannot resize this qcow2 image (it has an external data file); nothing was written\n');
  for (const name of ['r.qcow2', 'r.data']) assert.ok(readFileSync(join(dir, name)).equals(files[name]), name);
});

test('a shrink with a data file stopped after every write leaves an image qemu checks and reads', () => {
  let k = 0;
  for (; k < 20; k++) {
    const dir = dirs.path(`crash${k}`);
    mkdirSync(dir);
    for (const [name, bytes] of Object.entries(files)) writeFileSync(join(dir, name), bytes);
    const fds = [openSync(join(dir, 'd.qcow2'), 'r+'), openSync(join(dir, 'd.data'), 'r+')];
    let done: boolean;
    try {
      const ctx: OpContext = {
        devices: [
          { spec: { fd: fds[0], role: 'input', writable: true }, dev: new FdDevice(fds[0], true) },
          { spec: { fd: fds[1], role: 'data-file', writable: true, name: 'd.data', referrer: 0 }, dev: new FdDevice(fds[1], true) },
        ],
        emit: () => undefined,
      };
      assert.deepEqual(resizeOp({ format: 'qcow2', fileName: 'd.qcow2', amount: String(3 * 1024 * 1024), shrink: true, stopAfterWrites: k }, ctx), { format: 'qcow2', resized: true });
      done = readFileSync(join(dir, 'd.data')).length === 3 * 1024 * 1024;
    } finally {
      fds.forEach((fd) => closeSync(fd));
    }
    const check = runQemu('10.0', ['check', 'd.qcow2'], { cwd: dir });
    assert.ok(check.status === 0 || check.status === 3, `after ${k} writes: ${check.stdout}${check.stderr}`);
    // The first 3 MiB read as before, whatever size the header says by then.
    assert.equal(runQemu('10.0', ['convert', '-f', 'qcow2', '-O', 'raw', 'd.qcow2', 'out.raw'], { cwd: dir }).status, 0);
    assert.ok(readFileSync(join(dir, 'out.raw')).subarray(0, 3 << 20).equals(guestHead), `after ${k} writes the disk reads differently`);
    if (done) break;
  }
  assert.ok(k >= 2 && k < 20, `${k} writes`);
});
