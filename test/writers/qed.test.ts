// convert -O qed and dd -O qed (the QED writer through instar's command line) against qemu-img
// 7.2 and 10.0: output and status, the file byte for byte (qemu's QED is deterministic), where it
// has data, and a clean `check` and `compare` on it. The L2 tables land where qemu puts them
// (after the data of the first request into their range), so the sources have requests that
// start inside clusters, cross L2 ranges (4 KiB clusters: an L2 table maps 8 MiB) and runs longer
// than one 2 MiB convert chunk; cluster_size and table_size; -S 0 and -p; qemu's refusal of -c;
// instar's refusals of a backing file for the target and of table_size=1 (qemu cannot open that).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { holesFile, MiB, noise, rawFile } from './vpc-vmdk-harness.ts';
import { inProcess, runWriterCase, type WriterCase } from './vdi-qed-parallels-qcow-harness.ts';

let dir = '';
const at = (name: string) => join(dir, name);

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'instar-writer-qed-'));
  holesFile(at('holes.raw'));
  rawFile(at('span.raw'), 20 * MiB, [[4096, noise(1, 4096)], [20000, noise(2, 3 * MiB)], [8 * MiB - 8192, noise(3, 16384)], [17 * MiB - 4096, noise(4, 8192)]]);
});
after(() => rmSync(dir, { recursive: true, force: true }));

const raw = (name: string, ...args: string[]) => ['convert', '-f', 'raw', ...args, '-O', 'qed', at(name), 'OUT'];
const from = (name: string) => ({ path: at(name), format: 'raw' });

test('convert -O qed and dd -O qed: output, file, check and compare as qemu-img 7.2 and 10.0', async () => {
  const cases: WriterCase[] = [
    { label: 'holes', args: raw('holes.raw'), version: '7.2', format: 'qed', compareWith: from('holes.raw') },
    { label: 'holes -S 0', args: raw('holes.raw', '-S', '0'), version: '10.0', format: 'qed', compareWith: from('holes.raw') },
    { label: 'span', args: raw('span.raw'), version: '10.0', format: 'qed', compareWith: from('span.raw') },
    { label: 'span 4k', args: raw('span.raw', '-o', 'cluster_size=4096'), version: '7.2', format: 'qed', compareWith: from('span.raw') },
    { label: 'span 16k -S 64k', args: raw('span.raw', '-S', '64k', '-o', 'cluster_size=16k,table_size=2'), version: '10.0', format: 'qed', compareWith: from('span.raw') },
    { label: 'holes -p', args: raw('holes.raw', '-p'), version: '7.2', format: 'qed' },
    { label: 'span sandboxed', args: raw('span.raw', '-o', 'cluster_size=8k'), version: '7.2', format: 'qed', sandboxed: true, compareWith: from('span.raw') },
    { label: 'compressed', args: raw('holes.raw', '-c'), version: '10.0', format: 'qed' },
    { label: 'dd', args: ['dd', '-f', 'raw', '-O', 'qed', 'bs=64k', 'count=40', `if=${at('holes.raw')}`, 'of=OUT'], version: '10.0', format: 'qed' },
  ];
  const problems: string[] = [];
  for (const c of cases) problems.push(...(await runWriterCase(dir, c, (b) => b)));
  assert.deepEqual(problems, []);
});

test('convert -O qed: a backing file for the target and table_size=1 are refused in one line, nothing left', async () => {
  const out = at('refused.qed');
  for (const args of [['-B', at('holes.raw'), '-F', 'raw'], ['-o', `backing_file=${at('holes.raw')},backing_fmt=raw`], ['-o', 'table_size=1']]) {
    const r = await inProcess(['--sandbox=none', 'convert', '-f', 'raw', ...args, '-O', 'qed', at('holes.raw'), out]);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /^qemu-img: (instar cannot convert -O qed with a backing file|QED table offset is invalid)[^\n]*\n$/);
    assert.equal(existsSync(out), false);
  }
});
