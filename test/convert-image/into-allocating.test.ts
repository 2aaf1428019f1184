// convert -n into an existing VDI, VHD, QED, Parallels or qcow image against qemu-img 7.2 and 10.0:
// each tool writes into its own copy of the same image and the files must be equal byte for byte
// (blocks the map has written in place, new ones allocated after them in qemu's order, zeros
// allocating blocks too unless --target-is-zero; a VHD's block bitmaps set, its footer moved;
// QED's zero writes making zero clusters, L2 tables allocated after the data; Parallels under 10.0
// discarding whole zero clusters and reusing them; qcow's tables and clusters at the file's end). Then the crash test: the op stopped after
// each prefix of its writes leaves an image qemu-img opens and checks.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { scratch, qemu, type Scratch } from './harness.ts';
import { sameInto, sourceDisk } from './into-harness.ts';
import { prng } from '../helpers/xorshift.ts';
import { everyPrefixOpens } from './into-crash.ts';

let s: Scratch;
const at = (name: string) => join(s.dir, name);
const qcow2Source = ['-f', 'qcow2', '../src.qcow2'];

before(() => {
  s = scratch();
  const disk = sourceDisk(5);
  writeFileSync(at('src.raw'), disk);
  writeFileSync(at('head.raw'), disk.subarray(0, 96 * 1024));
  // Data, whole 64 KiB clusters of zeros (discarded under 8.2+), then data again (a freed cluster reused).
  const discards = Buffer.alloc(256 * 1024);
  const next = prng(6);
  for (let i = 0; i < 65536; i++) discards[i] = next() & 0xff;
  discards.fill(7, 192 * 1024, 196 * 1024);
  writeFileSync(at('discards.raw'), discards);
  qemu(['create', '-q', '-f', 'qcow2', at('src.qcow2'), '3M']);
  qemu(['-f', 'qcow2', '-c', 'write -P 0x11 0 64k', '-c', 'write -P 0 1M 64k', '-c', 'write -z 2M 64k', '-c', 'write -P 5 2500k 4k', at('src.qcow2')], undefined, '10.0', 'qemu-io');
  qemu(['create', '-q', '-f', 'vdi', at('empty.vdi'), '4M']);
  qemu(['create', '-q', '-f', 'vdi', '-o', 'static=on', at('static.vdi'), '4M']);
  // Blocks 3 and 1 allocated, in that order: the copy writes them in place, the others after them.
  qemu(['create', '-q', '-f', 'vdi', at('part.vdi'), '5M']);
  qemu(['-f', 'vdi', '-c', 'write -P 0x33 3M 4k', '-c', 'write -P 0x44 1M 4k', at('part.vdi')], undefined, '10.0', 'qemu-io');
  qemu(['create', '-q', '-f', 'vpc', at('empty.vpc'), '4M']);
  qemu(['create', '-q', '-f', 'vpc', '-o', 'subformat=fixed', at('fixed.vpc'), '4M']);
  qemu(['create', '-q', '-f', 'vpc', '-o', 'force_size=on', at('part.vpc'), '5M']);
  qemu(['-f', 'vpc', '-c', 'write -P 0x33 3M 4k', '-c', 'write -P 0x44 100k 4k', at('part.vpc')], undefined, '10.0', 'qemu-io');
  qemu(['create', '-q', '-f', 'qed', at('empty.qed'), '4M']);
  qemu(['create', '-q', '-f', 'qed', at('part.qed'), '5M']);
  qemu(['-f', 'qed', '-c', 'write -P 0x33 3M 4k', '-c', 'write -P 0x44 100k 4k', '-c', 'write -z 2M 128k', at('part.qed')], undefined, '10.0', 'qemu-io');
  qemu(['create', '-q', '-f', 'parallels', at('empty.parallels'), '4M']);
  // 64 KiB clusters, data where the source has zeros (discarded by 10.0) and past the source's end.
  qemu(['create', '-q', '-f', 'parallels', '-o', 'cluster_size=64k', at('part.parallels'), '5M']);
  qemu(['-f', 'parallels', '-c', 'write -P 0x33 4M 4k', '-c', 'write -P 0x44 100k 4k', '-c', 'write -P 0x55 2M 64k', at('part.parallels')], undefined, '10.0', 'qemu-io');
  // An empty source whose end is not a cluster's: qemu's one zero request [0, last source cluster)
  // is not whole 1 MiB clusters, so 10.0's parallels writes it as zeros rather than discarding.
  qemu(['create', '-q', '-f', 'qcow2', at('empty-odd.qcow2'), '3300000']);
  qemu(['create', '-q', '-f', 'parallels', at('mib.parallels'), '3300352']);
  qemu(['-f', 'parallels', '-c', 'write -P 0x5a 0 64k', at('mib.parallels')], undefined, '10.0', 'qemu-io');
  qemu(['create', '-q', '-f', 'qcow', at('empty.qcow'), '4M']);
  qemu(['create', '-q', '-f', 'qcow', at('part.qcow'), '5M']);
  qemu(['-f', 'qcow', '-c', 'write -P 0x33 3M 4k', '-c', 'write -P 0x44 100k 4k', at('part.qcow')], undefined, '10.0', 'qemu-io');
  // 4 KiB clusters, two-cluster tables: an L2 table per 1 MiB, some there already.
  qemu(['create', '-q', '-f', 'qed', '-o', 'cluster_size=4k,table_size=2', at('small.qed'), '40M']);
  qemu(['-f', 'qed', '-c', 'write -P 0x33 1M 8k', '-c', 'write -P 0x34 30M 4k', at('small.qed')], undefined, '10.0', 'qemu-io');
});
after(() => s.cleanup());

test('convert -n into a VDI (sandboxed): new blocks allocated in order, the zeros too', async () => {
  await sameInto(s.dir, 'empty', 'empty.vdi', ['-n', '-O', 'vdi', ...qcow2Source, 'empty.vdi'], true);
});

test('convert -n into a VDI: static, partly allocated, a raw source, --target-is-zero, -p with --target-image-opts', async () => {
  await sameInto(s.dir, 'static', 'static.vdi', ['-n', '-O', 'vdi', ...qcow2Source, 'static.vdi']);
  await sameInto(s.dir, 'part', 'part.vdi', ['-n', '-O', 'vdi', ...qcow2Source, 'part.vdi']);
  await sameInto(s.dir, 'part-raw', 'part.vdi', ['-n', '-O', 'vdi', '-f', 'raw', '../src.raw', 'part.vdi']);
  await sameInto(s.dir, 'is-zero', 'part.vdi', ['-n', '-O', 'vdi', '--target-is-zero', ...qcow2Source, 'part.vdi']);
  await sameInto(s.dir, 'opts-p', 'part.vdi', ['-n', '-p', '--target-image-opts', ...qcow2Source, 'driver=vdi,file.filename=part.vdi']);
});

test('convert -n into a VHD: dynamic empty and partly allocated (force_size), fixed, --target-is-zero, a raw source, -p', async () => {
  await sameInto(s.dir, 'v-empty', 'empty.vpc', ['-n', '-O', 'vpc', ...qcow2Source, 'empty.vpc']);
  await sameInto(s.dir, 'v-part', 'part.vpc', ['-n', '-O', 'vpc', ...qcow2Source, 'part.vpc']);
  await sameInto(s.dir, 'v-fixed', 'fixed.vpc', ['-n', '-O', 'vpc', ...qcow2Source, 'fixed.vpc']);
  await sameInto(s.dir, 'v-is-zero', 'part.vpc', ['-n', '-O', 'vpc', '--target-is-zero', ...qcow2Source, 'part.vpc']);
  await sameInto(s.dir, 'v-raw', 'part.vpc', ['-n', '-p', '--target-image-opts', '-f', 'raw', '../src.raw', 'driver=vpc,file.filename=part.vpc']);
});

test('convert -n into a QED image: empty, partly allocated with zero clusters, small tables, --target-is-zero, -S 0, -S 64k, a raw source, -p', async () => {
  await sameInto(s.dir, 'q-empty', 'empty.qed', ['-n', '-O', 'qed', ...qcow2Source, 'empty.qed']);
  await sameInto(s.dir, 'q-part', 'part.qed', ['-n', '-O', 'qed', ...qcow2Source, 'part.qed'], true);
  await sameInto(s.dir, 'q-small', 'small.qed', ['-n', '-O', 'qed', ...qcow2Source, 'small.qed']);
  await sameInto(s.dir, 'q-small-raw', 'small.qed', ['-n', '-O', 'qed', '-f', 'raw', '../src.raw', 'small.qed']);
  await sameInto(s.dir, 'q-is-zero', 'small.qed', ['-n', '-O', 'qed', '--target-is-zero', ...qcow2Source, 'small.qed']);
  await sameInto(s.dir, 'q-S0', 'part.qed', ['-n', '-O', 'qed', '-S', '0', ...qcow2Source, 'part.qed']);
  await sameInto(s.dir, 'q-S64k', 'part.qed', ['-n', '-O', 'qed', '-S', '64k', ...qcow2Source, 'part.qed']);
  await sameInto(s.dir, 'q-p', 'part.qed', ['-n', '-p', '--target-image-opts', ...qcow2Source, 'driver=qed,file.filename=part.qed']);
});

test('convert -n into a Parallels image: empty, partly allocated with 64 KiB clusters (discarded and reused by 10.0), --target-is-zero, -S 0, a raw source', async () => {
  await sameInto(s.dir, 'p-empty', 'empty.parallels', ['-n', '-O', 'parallels', ...qcow2Source, 'empty.parallels']);
  await sameInto(s.dir, 'p-part', 'part.parallels', ['-n', '-O', 'parallels', ...qcow2Source, 'part.parallels']);
  await sameInto(s.dir, 'p-raw', 'part.parallels', ['-n', '--target-image-opts', '-f', 'raw', '../src.raw', 'driver=parallels,file.filename=part.parallels']);
  await sameInto(s.dir, 'p-is-zero', 'part.parallels', ['-n', '-O', 'parallels', '--target-is-zero', ...qcow2Source, 'part.parallels']);
  await sameInto(s.dir, 'p-S0', 'part.parallels', ['-n', '-O', 'parallels', '-S', '0', ...qcow2Source, 'part.parallels']);
});

test('convert -n into a Parallels image: a zero run longer than qemu\'s 2 MiB data chunks is one write-zeroes request', async () => {
  await sameInto(s.dir, 'p-zero-run', 'mib.parallels', ['-n', '-O', 'parallels', '-f', 'qcow2', '../empty-odd.qcow2', 'mib.parallels']);
});

test('convert -n into a qcow image: empty, partly allocated, --target-is-zero, -S 0, a raw source', async () => {
  await sameInto(s.dir, 'c-empty', 'empty.qcow', ['-n', '-O', 'qcow', ...qcow2Source, 'empty.qcow']);
  await sameInto(s.dir, 'c-part', 'part.qcow', ['-n', '-O', 'qcow', ...qcow2Source, 'part.qcow']);
  await sameInto(s.dir, 'c-is-zero', 'part.qcow', ['-n', '-O', 'qcow', '--target-is-zero', ...qcow2Source, 'part.qcow']);
  await sameInto(s.dir, 'c-S0', 'part.qcow', ['-n', '-O', 'qcow', '-S', '0', ...qcow2Source, 'part.qcow']);
  await sameInto(s.dir, 'c-raw', 'part.qcow', ['-n', '--target-image-opts', '-f', 'raw', '../src.raw', 'driver=qcow,file.filename=part.qcow']);
});

test('convert -n into a VDI, qemu\'s failures (-c, a smaller image): nothing written', async () => {
  const cases: [string, string[]][] = [
    ['compress', ['-n', '-O', 'vdi', '-c', ...qcow2Source, 'empty.vdi']],
    ['smaller', ['-n', '-O', 'vdi', ...qcow2Source, '../src.qcow2', 'empty.vdi']],
  ];
  for (const [label, args] of cases) {
    const [ours] = await sameInto(s.dir, label, 'empty.vdi', args);
    assert.equal(ours.result.status, 1, label);
    assert.ok(ours.target.equals(readFileSync(at('empty.vdi'))), `${label}: the target was written`);
  }
});

for (const [format, parallelsDiscards] of [['vdi', false], ['vpc', false], ['qed', false], ['parallels', false], ['parallels', true], ['qcow', false]] as const) {
test(`convert -n into a ${format} image${parallelsDiscards ? ' (qemu 8.2+ discards)' : ''} stopped after each prefix of its writes leaves an image qemu-img opens and checks`, () => {
  // Small disks where each cluster is a write of its own (qcow's 4 KiB, these Parallels 64 KiB).
  const source = format === 'qcow' ? 'head.raw' : format === 'parallels' ? 'discards.raw' : 'src.raw';
  const k = everyPrefixOpens({ source: at(source), target: at(`part.${format}`), format, dir: s.dir, label: `${format}-${parallelsDiscards}`, options: { parallelsDiscards } });
  assert.ok(k > 3, `${k} writes`);
});
}
