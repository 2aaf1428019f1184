// convert -O qcow2 -o preallocation=falloc: qemu's create reserves the new image's data area with
// fallocate (unwritten extents: zeros nobody wrote), then copies. instar's guest cannot fallocate;
// it leaves the range as holes and the host reserves it, as create does. The bytes and st_blocks
// are qemu's either way (ext4 even reports written zeros as unwritten extents until much later),
// so the test counts what the run wrote: zeros written over the data area show there.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { VERSIONS, runQemu } from '../helpers/oracles.ts';
import { runInProcess } from '../helpers/in-process.ts';
import { qemu, qemuIo, tempDir } from './helpers.ts';

let dir: string;
let cleanup: () => void;
before(() => {
  ({ dir, cleanup } = tempDir());
  qemu(['create', '-q', '-f', 'qcow2', join(dir, 'src.qcow2'), '32M']);
  qemuIo(join(dir, 'src.qcow2'), ['write -P 7 1M 1M', 'write -P 9 20M 64k']);
});
after(() => cleanup());

/** Bytes this process has passed to write(2) so far (/proc/self/io: the in-process run's own writes). */
const writtenSoFar = (): number => Number(/^wchar: (\d+)$/m.exec(readFileSync('/proc/self/io', 'utf8'))![1]);

for (const version of VERSIONS) {
  test(`${version}: convert -O qcow2 -o preallocation=falloc reserves the data area as qemu-img does`, async () => {
    const args = (out: string) => ['convert', '-O', 'qcow2', '-o', 'preallocation=falloc', join(dir, 'src.qcow2'), join(dir, out)];
    const q = runQemu(version, args(`q${version}.qcow2`));
    assert.equal(q.status, 0, q.stderr);
    const before = writtenSoFar();
    const i = await runInProcess(['--sandbox=none', '--qemu-version', version, ...args(`i${version}.qcow2`)], dir);
    const written = writtenSoFar() - before;
    assert.deepEqual([i.status, i.stdout, i.stderr], [q.status, q.stdout, q.stderr]);
    const [qPath, iPath] = [join(dir, `q${version}.qcow2`), join(dir, `i${version}.qcow2`)];
    assert.ok(readFileSync(iPath).equals(readFileSync(qPath)), 'bytes');
    // Allocated alike within a cluster (the copy's own writes may fill a metadata gap's block or not).
    const [iBlocks, qBlocks] = [statSync(iPath).blocks, statSync(qPath).blocks];
    assert.ok(Math.abs(iBlocks - qBlocks) * 512 <= 64 * 1024, `allocated: instar ${iBlocks} blocks, qemu ${qBlocks}`);
    // The 32 MiB data area is reserved, not written: only the copy's 1.06 MiB and the metadata are.
    assert.ok(written < 4 * 1024 * 1024, `instar wrote ${written} bytes`);
  });
}
