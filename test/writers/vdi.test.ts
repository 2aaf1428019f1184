// convert -O vdi and dd -O vdi (the VDI writer through instar's command line) against qemu-img
// 7.2 and 10.0: output and status, the file byte for byte once the two random UUIDs are masked
// (the only bytes that differ between two runs of qemu itself), where it has data, and a clean
// `check` and `compare` on it. Sources with data, zero runs and holes across 1 MiB blocks, static=on, -S 0, -p; qemu's refusals of -c and -B.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { holesFile, MiB, rawFile } from './vpc-vmdk-harness.ts';
import { runWriterCase, type WriterCase } from './vdi-qed-parallels-qcow-harness.ts';

let dir = '';
const at = (name: string) => join(dir, name);

/** The header's image and last-snapshot UUIDs, which qemu makes random. */
function maskVdi(file: Buffer): Buffer {
  const out = Buffer.from(file);
  if (out.length >= 0x1a8) out.fill(0, 0x188, 0x1a8);
  return out;
}

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'instar-writer-vdi-'));
  holesFile(at('holes.raw'));
  // Written zeros over a whole block and part of another: skipped as qemu skips them (unless -S 0).
  rawFile(at('zeros.raw'), 3 * MiB + 512, [[0, Buffer.alloc(MiB + 4096)], [2 * MiB + 512, Buffer.from('data')]]);
  rawFile(at('empty.raw'), 0, []);
});
after(() => rmSync(dir, { recursive: true, force: true }));

const raw = (name: string, ...args: string[]) => ['convert', '-f', 'raw', ...args, '-O', 'vdi', at(name), 'OUT'];

test('convert -O vdi and dd -O vdi: output, file, check and compare as qemu-img 7.2 and 10.0', async () => {
  const holes = { path: at('holes.raw'), format: 'raw' };
  const cases: WriterCase[] = [
    { label: 'holes', args: raw('holes.raw'), version: '7.2', format: 'vdi', compareWith: holes },
    { label: 'holes -S 0', args: raw('holes.raw', '-S', '0'), version: '10.0', format: 'vdi', compareWith: holes },
    { label: 'holes static', args: raw('holes.raw', '-o', 'static=on'), version: '7.2', format: 'vdi', compareWith: holes },
    { label: 'holes -p', args: raw('holes.raw', '-p'), version: '10.0', format: 'vdi' },
    { label: 'zeros', args: raw('zeros.raw'), version: '10.0', format: 'vdi', compareWith: { path: at('zeros.raw'), format: 'raw' } },
    { label: 'empty', args: raw('empty.raw'), version: '7.2', format: 'vdi' },
    { label: 'zeros sandboxed', args: raw('zeros.raw', '-o', 'static=on'), version: '10.0', format: 'vdi', sandboxed: true, compareWith: { path: at('zeros.raw'), format: 'raw' } },
    { label: 'compressed', args: raw('holes.raw', '-c'), version: '7.2', format: 'vdi' },
    { label: 'backing', args: raw('holes.raw', '-B', at('holes.raw'), '-F', 'raw'), version: '10.0', format: 'vdi' },
    { label: 'dd', args: ['dd', '-f', 'raw', '-O', 'vdi', 'bs=64k', 'count=40', `if=${at('holes.raw')}`, 'of=OUT'], version: '7.2', format: 'vdi' },
  ];
  const problems: string[] = [];
  for (const c of cases) problems.push(...(await runWriterCase(dir, c, maskVdi)));
  assert.deepEqual(problems, []);
});
