// convert -O parallels and dd -O parallels (the Parallels writer through instar's command line)
// against qemu-img 7.2 and 10.0: output and status, the file byte for byte (qemu's Parallels
// image is deterministic), where it has data (qemu preallocates with zeros and cuts the file back
// at close: every allocated cluster is data), and a clean `check` and `compare` on it. Sources
// with data, zero runs and holes across clusters; cluster sizes from 1 MiB down to 1536 bytes (a
// BAT over several clusters); -S 0 (-p: vdi and qcow tests); qemu's refusals of -c and -B.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { holesFile, MiB, noise, rawFile } from './vpc-vmdk-harness.ts';
import { runWriterCase, type WriterCase } from './vdi-qed-parallels-qcow-harness.ts';

let dir = '';
const at = (name: string) => join(dir, name);

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'instar-writer-parallels-'));
  holesFile(at('holes.raw'));
  rawFile(at('span.raw'), 12 * MiB, [[4096, noise(1, 4096)], [20000, Buffer.alloc(MiB)], [2 * MiB, noise(2, 3 * MiB)], [11 * MiB - 4096, noise(4, 8192)]]);
});
after(() => rmSync(dir, { recursive: true, force: true }));

const raw = (name: string, ...args: string[]) => ['convert', '-f', 'raw', ...args, '-O', 'parallels', at(name), 'OUT'];
const from = (name: string) => ({ path: at(name), format: 'raw' });

test('convert -O parallels and dd -O parallels: output, file, check and compare as qemu-img 7.2 and 10.0', async () => {
  const cases: WriterCase[] = [
    { label: 'holes', args: raw('holes.raw'), version: '10.0', format: 'parallels', compareWith: from('holes.raw') },
    { label: 'holes -S 0', args: raw('holes.raw', '-S', '0'), version: '7.2', format: 'parallels', compareWith: from('holes.raw') },
    { label: 'span', args: raw('span.raw'), version: '7.2', format: 'parallels', compareWith: from('span.raw') },
    { label: 'span 64k', args: raw('span.raw', '-o', 'cluster_size=64k'), version: '10.0', format: 'parallels', compareWith: from('span.raw') },
    { label: 'span 1536', args: raw('span.raw', '-o', 'cluster_size=1536'), version: '7.2', format: 'parallels', compareWith: from('span.raw') },
    { label: 'span sandboxed', args: raw('span.raw', '-o', 'cluster_size=256k'), version: '10.0', format: 'parallels', sandboxed: true, compareWith: from('span.raw') },
    { label: 'compressed', args: raw('holes.raw', '-c'), version: '7.2', format: 'parallels' },
    { label: 'backing', args: raw('holes.raw', '-B', at('holes.raw'), '-F', 'raw'), version: '10.0', format: 'parallels' },
    { label: 'dd', args: ['dd', '-f', 'raw', '-O', 'parallels', 'bs=64k', 'count=40', `if=${at('holes.raw')}`, 'of=OUT'], version: '7.2', format: 'parallels' },
  ];
  const problems: string[] = [];
  for (const c of cases) problems.push(...(await runWriterCase(dir, c, (b) => b)));
  assert.deepEqual(problems, []);
});
