// convert -O qed and dd -O qed (the QED writer through instar's command line) against qemu-img
// 7.2 and 10.0: output and status, the file byte for byte (qemu's QED is deterministic), where it
// has data, and a clean `check` and `compare` on it. The L2 tables land where qemu puts them
// (after the data of the first request into their range), so the sources have requests that
// start inside clusters, cross L2 ranges (4 KiB clusters: an L2 table maps 8 MiB) and runs longer
// than one 2 MiB convert chunk; cluster_size and table_size; -S 0; qemu's refusal of -c;
// a backing file for the target (-B, -o backing_file: clusters covered in part are copied from
// it, whole clusters of zeros become zero clusters); instar's refusal of table_size=1.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chainFiles, holesFile, MiB, noise, rawFile } from './vpc-vmdk-harness.ts';
import { qemu } from '../convert-image/harness.ts';
import { inProcess, runWriterCase, type WriterCase } from './vdi-qed-parallels-qcow-harness.ts';

let dir = '';
const at = (name: string) => join(dir, name);

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'instar-writer-qed-'));
  holesFile(at('holes.raw'));
  rawFile(at('span.raw'), 20 * MiB, [[4096, noise(1, 4096)], [20000, noise(2, 3 * MiB)], [8 * MiB - 8192, noise(3, 16384)], [17 * MiB - 4096, noise(4, 8192)]]);
  chainFiles(dir);
  // A top of 4 KiB clusters over base.qcow2's data: qed's 64 KiB clusters take the rest from the backing file.
  qemu(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', '-b', at('base.qcow2'), '-F', 'qcow2', at('small-top.qcow2'), '6M']);
  qemu(['-f', 'qcow2', '-c', 'write -P 0x66 8k 4k', '-c', 'write -z 200k 4k', '-c', 'write -P 0x77 4160k 8k', at('small-top.qcow2')], undefined, '10.0', 'qemu-io');
});
after(() => rmSync(dir, { recursive: true, force: true }));

const raw = (name: string, ...args: string[]) => ['convert', '-f', 'raw', ...args, '-O', 'qed', at(name), 'OUT'];
const from = (name: string) => ({ path: at(name), format: 'raw' });
/** The target's backing file is beside the run directories, outside the target's own. */
const allow = () => ['--allow-path', dir];

test('convert -O qed and dd -O qed: output, file, check and compare as qemu-img 7.2 and 10.0', async () => {
  const cases: WriterCase[] = [
    { label: 'holes', args: raw('holes.raw'), version: '7.2', format: 'qed', compareWith: from('holes.raw') },
    { label: 'holes -S 0', args: raw('holes.raw', '-S', '0'), version: '10.0', format: 'qed', compareWith: from('holes.raw') },
    { label: 'span', args: raw('span.raw'), version: '10.0', format: 'qed', compareWith: from('span.raw') },
    { label: 'span 4k', args: raw('span.raw', '-o', 'cluster_size=4096'), version: '7.2', format: 'qed', compareWith: from('span.raw') },
    { label: 'span 16k -S 64k', args: raw('span.raw', '-S', '64k', '-o', 'cluster_size=16k,table_size=2'), version: '10.0', format: 'qed', compareWith: from('span.raw') },
    { label: 'span sandboxed', args: raw('span.raw', '-o', 'cluster_size=8k'), version: '7.2', format: 'qed', sandboxed: true, compareWith: from('span.raw') },
    { label: 'compressed', args: raw('holes.raw', '-c'), version: '10.0', format: 'qed' },
    // A backing file for the target: copy-on-write from it, zero clusters for whole clusters of zeros.
    { label: 'holes -B', args: raw('holes.raw', '-B', at('base.qcow2'), '-F', 'qcow2'), version: '7.2', format: 'qed', compareWith: from('holes.raw'), instarArgs: allow() },
    { label: 'chain -B 4k', args: ['convert', '-f', 'qcow2', '-B', at('base.qcow2'), '-F', 'qcow2', '-o', 'cluster_size=4k', '-O', 'qed', at('top.qcow2'), 'OUT'], version: '10.0', format: 'qed', compareWith: { path: at('top.qcow2'), format: 'qcow2' }, instarArgs: allow() },
    { label: 'small top -B', args: ['convert', '-f', 'qcow2', '-B', at('base.qcow2'), '-F', 'qcow2', '-O', 'qed', at('small-top.qcow2'), 'OUT'], version: '7.2', format: 'qed', compareWith: { path: at('small-top.qcow2'), format: 'qcow2' }, instarArgs: allow() },
    { label: 'span backing_file -S 64k sandboxed', args: raw('span.raw', '-S', '64k', '-o', `backing_file=${at('base.qcow2')},backing_fmt=qcow2,cluster_size=16k`), version: '7.2', format: 'qed', sandboxed: true, compareWith: from('span.raw'), instarArgs: allow() },
    { label: 'dd', args: ['dd', '-f', 'raw', '-O', 'qed', 'bs=64k', 'count=40', `if=${at('holes.raw')}`, 'of=OUT'], version: '10.0', format: 'qed' },
  ];
  const problems: string[] = [];
  for (const c of cases) problems.push(...(await runWriterCase(dir, c, (b) => b)));
  assert.deepEqual(problems, []);
});

// Byte for byte against both oracles in test/convert-image/options.test.ts; this is the unsandboxed path.
test('convert -O qed: table_size=1 (qemu cannot open what it creates) fails as qemu-img does, the image left as created', async () => {
  const out = at('refused.qed');
  const r = await inProcess(['--sandbox=none', 'convert', '-f', 'raw', '-o', 'table_size=1', '-O', 'qed', at('holes.raw'), out]);
  assert.deepEqual([r.status, r.stdout, r.stderr], [1, '', `qemu-img: Could not open '${out}': QED table offset is invalid\n`]);
  assert.equal(existsSync(out), true);
});
