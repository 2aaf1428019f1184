// convert -O qcow and dd -O qcow (the qcow version 1 writer through instar's command line)
// against qemu-img 7.2 and 10.0: output and status, the file byte for byte (qemu's qcow is
// deterministic), where it has data (qemu extends the file over a new cluster: what a request
// does not cover stays a hole), and a clean `check` and `compare` on it. Sources with data, zero
// runs and holes across clusters and L2 ranges; -S 0, -p; -c (compressed clusters at the next
// sector, incompressible ones written plainly); a backing file for the target (-B, -o
// backing_file: 512-byte clusters, only the source's top layer copied), with -c and -S 0 too.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chainFiles, holesFile, MiB, noise, openWriterOn, rawFile, read } from './vpc-vmdk-harness.ts';
import { runWriterCase, type WriterCase } from './vdi-qed-parallels-qcow-harness.ts';

let dir = '';
const at = (name: string) => join(dir, name);

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'instar-writer-qcow-'));
  holesFile(at('holes.raw'));
  // Compressible, incompressible and repeating clusters, and a tail cluster the disk covers in part.
  rawFile(at('mixed.raw'), 3 * MiB + 2048, [[0, Buffer.alloc(5000, 0x41)], [8192, noise(1, 4096)], [MiB, Buffer.alloc(10240, 0x5a)], [3 * MiB + 1000, Buffer.from('end')]]);
  // Small: with a backing file qcow's clusters are 512 bytes, and qemu syncs each one's L2 entry.
  rawFile(at('tiny.raw'), 256 * 1024 + 1024, [[1000, Buffer.alloc(3000, 0x42)], [128 * 1024, noise(2, 700)]]);
  // The -B cases copy the top layer in 512-byte clusters, each synced by qemu: 112 KiB of top
  // data across the 256 KiB of an L2 table rather than chainFiles' 1 MiB.
  chainFiles(dir, 'write -P 0x33 200k 112k');
});

after(() => rmSync(dir, { recursive: true, force: true }));

const raw = (name: string, ...args: string[]) => ['convert', '-f', 'raw', ...args, '-O', 'qcow', at(name), 'OUT'];
const from = (name: string) => ({ path: at(name), format: 'raw' });
const top = { path: at('top.qcow2'), format: 'qcow2' };

test('convert -O qcow and dd -O qcow: output, file, check and compare as qemu-img 7.2 and 10.0', async () => {
  const overBase = (...args: string[]) => ['convert', '-f', 'qcow2', ...args, '-O', 'qcow', at('top.qcow2'), 'OUT'];
  const cases: WriterCase[] = [
    { label: 'holes', args: raw('holes.raw'), version: '10.0', format: 'qcow', compareWith: from('holes.raw') },
    { label: 'holes -S 0', args: raw('holes.raw', '-S', '0'), version: '7.2', format: 'qcow', compareWith: from('holes.raw') },
    { label: 'mixed -c', args: raw('mixed.raw', '-c'), version: '7.2', format: 'qcow', compareWith: from('mixed.raw') },
    { label: 'holes -c -p', args: raw('holes.raw', '-c', '-p'), version: '10.0', format: 'qcow' },
    { label: 'chain sandboxed', args: overBase(), version: '7.2', format: 'qcow', sandboxed: true, compareWith: top },
    { label: 'chain -B', args: overBase('-B', at('base.qcow2'), '-F', 'qcow2'), version: '10.0', format: 'qcow', compareWith: top, instarArgs: ['--allow-path', dir] },
    { label: 'chain backing_file -c', args: overBase('-c', '-o', `backing_file=${at('base.qcow2')},backing_fmt=qcow2`), version: '7.2', format: 'qcow', compareWith: top, instarArgs: ['--allow-path', dir] },
    { label: 'raw -B -S 0 sandboxed', args: raw('tiny.raw', '-S', '0', '-B', at('base.qcow2'), '-F', 'qcow2'), version: '10.0', format: 'qcow', sandboxed: true, compareWith: from('tiny.raw'), instarArgs: ['--allow-path', dir] },
    { label: 'dd', args: ['dd', '-f', 'raw', '-O', 'qcow', 'bs=64k', 'count=40', `if=${at('holes.raw')}`, 'of=OUT'], version: '7.2', format: 'qcow' },
  ];
  const problems: string[] = [];
  for (const c of cases) problems.push(...(await runWriterCase(dir, c, (b) => b)));
  assert.deepEqual(problems, []);
});

test('vdi, qed, parallels and qcow writers: a write outside the disk is refused with a one-line ImageError, nothing written', () => {
  const src = at('small.raw');
  rawFile(src, MiB, []);
  for (const [format, options] of [['vdi', ''], ['vdi', 'static=on'], ['qed', ''], ['parallels', ''], ['qcow', ''], ['qcow', `backing_file=${src}`]] as const) {
    const out = at(`refuse.${format}`);
    const { writer, fds } = openWriterOn(format, options, src, out);
    try {
      const before = read(out);
      for (const [bytes, pos] of [[512, 64 * MiB], [512, -512], [4096, MiB - 512], [512, 0.5], [512, 2 ** 60]]) {
        assert.throws(() => writer.write(Buffer.alloc(bytes, 1), pos), { name: 'ImageError', message: /^instar refuses a write of \d+ bytes at offset [^\n]+ outside the \d+-byte disk$/ }, `${format} ${options} at ${pos}`);
      }
      if (writer.writeZeroes) for (const [pos, length] of [[64 * MiB, 512], [0, -512], [MiB - 512, 4096]]) assert.throws(() => writer.writeZeroes!(pos, length), { name: 'ImageError' });
      if (writer.writeCompressed) assert.throws(() => writer.writeCompressed!(Buffer.alloc(4096, 1), 64 * MiB), { name: 'ImageError' });
      assert.deepEqual(read(out), before, `${format} ${options}: the file changed`);
    } finally {
      fds.forEach((fd) => closeSync(fd));
    }
  }
});
