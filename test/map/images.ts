// The image corpus for the map differential tests: every kind of allocation qemu-img map tells
// apart, built with the real qemu tools at test time (qemu-img 7.2 and its qemu-io).
import { rmSync, writeFileSync } from 'node:fs';
import type { ImageDir } from '../differential/harness.ts';

/** Builds the corpus in `images`; returns each image with the -f to give it. */
export function buildCorpus(images: ImageDir): { file: string; format: string }[] {
  const list: { file: string; format: string }[] = [];
  const img = (...a: string[]) => images.img(...a);
  const io = (fmt: string, file: string, ...cmds: string[]) => images.io('-f', fmt, ...cmds.flatMap((c) => ['-c', c]), file);
  const add = (file: string, format: string) => list.push({ file, format });
  const qcow2 = (file: string, size: string, opts: string[], ...cmds: string[]) => {
    img('create', '-q', '-f', 'qcow2', ...opts, file, ...(size ? [size] : []));
    if (cmds.length > 0) io('qcow2', file, ...cmds);
    add(file, 'qcow2');
  };

  qcow2('empty.qcow2', '4M', []);
  qcow2('data.qcow2', '4M', [], 'write -P 1 0 64k', 'write -P 2 1M 128k', 'write -P 3 3M 4k');
  qcow2('zeros.qcow2', '4M', [], 'write -P 1 0 128k', 'write -z 1M 192k', 'write -P 4 2M 64k');
  qcow2('zero-alloc.qcow2', '4M', [], 'write -P 1 0 256k', 'write -z 64k 64k');
  qcow2('discard.qcow2', '4M', [], 'write -P 1 0 512k', 'discard 128k 128k');
  qcow2('small-cluster.qcow2', '1M', ['-o', 'cluster_size=512'], 'write -P 1 0 512', 'write -P 2 1536 1k', 'write -P 3 100k 3k', 'write -z 200k 4k');
  qcow2('big-cluster.qcow2', '16M', ['-o', 'cluster_size=2M'], 'write -P 1 3M 4k', 'write -P 2 9M 2M');
  qcow2('v2.qcow2', '4M', ['-o', 'compat=0.10'], 'write -P 1 64k 64k', 'write -P 2 2M 8k');
  qcow2('sub.qcow2', '4M', ['-o', 'extended_l2=on'], 'write -P 1 0 2k', 'write -P 2 8k 4k', 'write -z 16k 2k', 'write -P 3 1M 64k', 'write -z 2M 64k');
  qcow2('sub-mixed.qcow2', '4M', ['-o', 'extended_l2=on,cluster_size=128k'], 'write -P 1 4k 4k', 'write -P 2 64k 4k', 'write -z 128k 8k', 'write -P 3 140k 4k');
  qcow2('scattered.qcow2', '8M', ['-o', 'cluster_size=4k'], ...Array.from({ length: 64 }, (_, i) => `write -P ${i + 1} ${i * 72 * 1024} 4k`));
  img('create', '-q', '-f', 'qcow2', '-o', 'data_file=data-ext.bin', 'ext.qcow2', '4M');
  io('qcow2', 'ext.qcow2', 'write -P 1 0 64k', 'write -P 2 2M 64k');
  add('ext.qcow2', 'qcow2');
  img('create', '-q', '-f', 'qcow2', '-o', 'data_file=data-rawext.bin,data_file_raw=on', 'rawext.qcow2', '4M');
  io('qcow2', 'rawext.qcow2', 'write -P 1 64k 64k');
  add('rawext.qcow2', 'qcow2');
  // 20480 entries (512-byte clusters, every other one allocated): several streamed messages.
  writeFileSync(images.path('alternate.raw'), Buffer.concat(Array.from({ length: 20480 }, (_, i) => Buffer.alloc(512, i % 2 === 0 ? 1 + (i % 250) : 0))));
  img('convert', '-q', '-S', '512', '-f', 'raw', '-O', 'qcow2', '-o', 'cluster_size=512', 'alternate.raw', 'many.qcow2');
  add('many.qcow2', 'qcow2');
  img('convert', '-q', '-c', '-O', 'qcow2', 'data.qcow2', 'compressed.qcow2');
  add('compressed.qcow2', 'qcow2');
  img('convert', '-q', '-c', '-O', 'qcow2', 'data.qcow2', 'compressed-mixed.qcow2');
  io('qcow2', 'compressed-mixed.qcow2', 'write -P 9 2M 64k');
  add('compressed-mixed.qcow2', 'qcow2');

  // Backing chains: data at different depths, a raw base, a short base, a subdirectory.
  img('create', '-q', '-f', 'raw', 'base.raw', '4M');
  io('raw', 'base.raw', 'write -P 1 0 64k', 'write -P 2 1M 8k');
  add('base.raw', 'raw');
  qcow2('mid.qcow2', '', ['-b', 'base.raw', '-F', 'raw'], 'write -P 3 32k 64k', 'write -z 2M 64k');
  qcow2('top.qcow2', '', ['-b', 'mid.qcow2', '-F', 'qcow2'], 'write -P 4 3M 4k', 'write -z 1M 4k');
  qcow2('base2.qcow2', '2M', [], 'write -P 1 0 1M');
  qcow2('long.qcow2', '4M', ['-b', 'base2.qcow2', '-F', 'qcow2'], 'write -P 2 512k 64k', 'write -P 3 3M 64k');
  qcow2('over-empty.qcow2', '', ['-b', 'empty.qcow2', '-F', 'qcow2'], 'write -P 1 1M 64k');
  images.mkdir('d');
  qcow2('d/base.qcow2', '4M', [], 'write -P 1 1M 1M');
  qcow2('d/top.qcow2', '', ['-b', 'base.qcow2', '-F', 'qcow2'], 'write -P 2 1536k 64k');
  qcow2('four.qcow2', '', ['-b', 'top.qcow2', '-F', 'qcow2'], 'write -P 5 0 4k');

  // raw: holes, data, fully allocated, an unaligned size, zeroed ranges.
  img('create', '-q', '-f', 'raw', 'empty.raw', '2M');
  add('empty.raw', 'raw');
  img('create', '-q', '-f', 'raw', '-o', 'preallocation=full', 'full.raw', '1M');
  add('full.raw', 'raw');
  img('create', '-q', '-f', 'raw', 'holes.raw', '4M');
  io('raw', 'holes.raw', 'write -P 7 4k 4k', 'write -P 8 1M 1M', 'write -P 9 3M 8k');
  add('holes.raw', 'raw');
  // Not in the list: zero-allocated blocks, where instar differs (see src/formats/raw/holes.ts).
  // Written zeros (64 KiB of ones, 64 KiB of zeros, 64 KiB of ones), then a sparse tail.
  writeFileSync(images.path('zeroed.raw'), Buffer.concat([Buffer.alloc(65536, 1), Buffer.alloc(65536), Buffer.alloc(65536, 1)]));
  images.img('resize', '-q', '-f', 'raw', 'zeroed.raw', '1M');
  writeFileSync(images.path('odd.raw'), Buffer.alloc(5000, 1));
  add('odd.raw', 'raw');

  // vmdk: sparse, streamOptimized (compressed), flat, split, with a backing file.
  img('create', '-q', '-f', 'vmdk', 'empty.vmdk', '4M');
  add('empty.vmdk', 'vmdk');
  img('create', '-q', '-f', 'vmdk', 'sparse.vmdk', '4M');
  io('vmdk', 'sparse.vmdk', 'write -P 1 0 64k', 'write -P 2 1M 8k', 'write -P 3 3M 1M');
  add('sparse.vmdk', 'vmdk');
  img('convert', '-q', '-O', 'vmdk', '-o', 'subformat=streamOptimized', 'data.qcow2', 'stream.vmdk');
  add('stream.vmdk', 'vmdk');
  img('create', '-q', '-f', 'vmdk', '-o', 'subformat=monolithicFlat', 'flat.vmdk', '4M');
  add('flat.vmdk', 'vmdk');
  img('create', '-q', '-f', 'vmdk', '-o', 'subformat=monolithicFlat', 'flat-data.vmdk', '4M');
  io('vmdk', 'flat-data.vmdk', 'write -P 1 64k 64k', 'write -P 2 3M 4k');
  add('flat-data.vmdk', 'vmdk');
  img('create', '-q', '-f', 'vmdk', '-o', 'subformat=twoGbMaxExtentSparse', 'split.vmdk', '4M');
  io('vmdk', 'split.vmdk', 'write -P 1 1M 64k');
  add('split.vmdk', 'vmdk');
  img('create', '-q', '-f', 'vmdk', '-b', 'sparse.vmdk', '-F', 'vmdk', 'child.vmdk');
  io('vmdk', 'child.vmdk', 'write -P 4 2M 64k');
  add('child.vmdk', 'vmdk');

  // vpc and vhdx.
  img('create', '-q', '-f', 'vpc', 'empty.vhd', '4M');
  add('empty.vhd', 'vpc');
  img('create', '-q', '-f', 'vpc', 'dyn.vhd', '8M');
  io('vpc', 'dyn.vhd', 'write -P 1 0 64k', 'write -P 2 4M 4k');
  add('dyn.vhd', 'vpc');
  img('create', '-q', '-f', 'vpc', '-o', 'subformat=fixed', 'fixed.vhd', '4M');
  io('vpc', 'fixed.vhd', 'write -P 1 1M 64k');
  add('fixed.vhd', 'vpc');
  img('create', '-q', '-f', 'vhdx', 'empty.vhdx', '8M');
  add('empty.vhdx', 'vhdx');
  img('create', '-q', '-f', 'vhdx', 'data.vhdx', '8M');
  io('vhdx', 'data.vhdx', 'write -P 1 0 64k', 'write -P 2 3M 1M');
  add('data.vhdx', 'vhdx');
  // Not in the list: metadata preallocation, where instar differs (qemu detects it from refcounts
  // against the file's allocation and then asks the file system about each data cluster).
  img('create', '-q', '-f', 'qcow2', '-o', 'preallocation=metadata', 'prealloc-meta.qcow2', '1M');
  io('qcow2', 'prealloc-meta.qcow2', 'write -P 1 0 4k');
  // Not in the list: images whose other files are missing (error wording).
  img('create', '-q', '-u', '-f', 'qcow2', '-b', 'nothere.qcow2', '-F', 'qcow2', 'dangling.qcow2', '1M');
  img('create', '-q', '-f', 'qcow2', '-o', 'data_file=gone-data.bin', 'no-data.qcow2', '1M');
  rmSync(images.path('gone-data.bin'));
  img('create', '-q', '-f', 'vmdk', '-o', 'subformat=monolithicFlat', 'no-extent.vmdk', '1M');
  rmSync(images.path('no-extent-flat.vmdk'));
  return list;
}
