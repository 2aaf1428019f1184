// Hostile images whose danger is in their own bytes: compression bombs, integer-overflow
// headers, hostile VMDK descriptors, truncated headers of every format, polyglots, raw files.
import { crc32c } from '../../src/formats/vhdx/crc32c.ts';
import type { HostileCase } from './case.ts';
import { qemuMade } from './case.ts';
import { qcow2, zlibBomb, zstdBomb } from './craft/qcow2.ts';
import { descriptor, patchSparse } from './craft/vmdk.ts';
import { vhdxRegionPastEof } from './craft/vhd.ts';
import { opens, refused, SAFE, UNSAFE, unreadable, VERDICT, type Expectations, type Outcome } from './outcomes.ts';

const TiB = 1024n ** 4n;
/** Refused with no file named: these must not open anything but the image itself. */
const bad = (reason?: RegExp, inspect: Outcome = VERDICT): Expectations => refused(reason, inspect);
/** Opens (a field qemu reads lazily or not at all, or a past-EOF table read as zeros). */
const fine = (stdout?: RegExp): Expectations => opens(stdout, VERDICT);
const ANY_VERDICT_UNSAFE_OR_UNREAD: Outcome = VERDICT;
/**
 * Opens, but its byte size wraps in 64 bits: as in qemu, every size query fails, each command in
 * its own words (compare's status for it is 4); check reads the metadata and finds nothing.
 */
const sizeUnknown = (): Expectations => ({
  info: { exit: 1, stderr: /Can't get image size 'top'/ },
  inspect: VERDICT,
  map: { exit: 1, stderr: /Failed to get size for 'top'/ },
  compare: { exit: 4, stderr: /Can't get size of top/ },
  convert: { exit: 1, stderr: /Could not get size of top/ },
  check: { exit: 1 },
});

function c(name: string, category: string, top: Buffer | string, expect: Expectations, extra: HostileCase['files'] = {}): HostileCase {
  return { name, category, files: { ...extra, top }, targets: [], expect };
}

export function structureCases(): HostileCase[] {
  const cases: HostileCase[] = [];
  const bomb = 'compression bomb';
  // Each stream inflates far past the 64 KiB cluster; a reader must stop at the cluster size.
  cases.push({ ...c('zlib-bomb-64m', bomb, qcow2({ compressed: new Map([[0, zlibBomb(64 * 1024 * 1024)]]) }), zlibBomb_) });
  cases.push({ ...c('zlib-bomb-every-cluster', bomb, qcow2({ compressed: new Map(Array.from({ length: 16 }, (_, i) => [i, zlibBomb(16 * 1024 * 1024)])) }), zlibBomb_) });
  cases.push(c('zstd-bomb-100m', bomb, qcow2({ compressionType: 1, compressed: new Map([[0, zstdBomb(800)]]) }), bombRead));
  cases.push(c('zlib-garbage-stream', bomb, qcow2({ compressed: new Map([[0, Buffer.alloc(4096, 0xff)]]) }), bombRead));

  const ovf = 'integer overflow';
  cases.push(c('l1-size-2^32-1', ovf, qcow2({ l1Size: 0xffffffff }), bad()));
  cases.push(c('l1-size-2^31', ovf, qcow2({ l1Size: 0x80000000 }), bad()));
  cases.push(c('l1-size-2^28-large-disk', ovf, qcow2({ l1Size: 0x10000000, virtualSize: 1n << 62n }), bad()));
  cases.push(c('l1-offset-past-eof', ovf, qcow2({ l1Offset: 1n << 60n, data: new Map([[0, Buffer.alloc(512, 1)]]) }), fine()));
  cases.push(c('l1-offset-unaligned', ovf, qcow2({ l1Offset: 12345n }), bad()));
  cases.push(c('cluster-bits-8', ovf, qcow2({ clusterBits: 8 }), bad(/cluster size/i)));
  cases.push(c('cluster-bits-22', ovf, qcow2({ clusterBits: 22 }), bad(/cluster size/i)));
  cases.push(c('cluster-bits-63', ovf, qcow2({ clusterBits: 63 }), bad(/cluster size/i)));
  cases.push(c('refcount-order-7', ovf, qcow2({ refcountOrder: 7 }), bad(/Reference count entry width/)));
  cases.push(c('virtual-size-2^63', ovf, qcow2({ virtualSize: 1n << 63n }), bad()));
  cases.push(c('virtual-size-2^64-1', ovf, qcow2({ virtualSize: (1n << 64n) - 1n }), bad()));
  cases.push(c('virtual-size-1PB', ovf, qcow2({ virtualSize: 1024n * TiB, l1Size: 1 }), bad()));
  cases.push(c('refcount-table-clusters-huge', ovf, qcow2({ refcountTableClusters: 0x7fffffff }), bad()));
  cases.push(c('snapshots-65536-past-eof', ovf, qcow2({ snapshots: 65536, snapshotsOffset: 1n << 40n }), fine()));
  cases.push(c('header-length-huge', ovf, qcow2({ headerLength: 0x7fffffff }), bad()));
  cases.push(c('backing-offset-past-eof', ovf, qcow2({ backing: 'x', backingOffset: 1n << 50n }), bad()));
  cases.push(c('backing-size-2^32-1', ovf, qcow2({ backing: 'x', backingSize: 0xffffffff }), bad()));
  cases.push(c('unknown-incompatible-bit', ovf, qcow2({ incompatible: 1n << 40n }), bad()));
  // Encrypted (legacy AES): info lists it; the data commands need the key, which the user did not give.
  cases.push({
    ...c('crypt-method-aes', ovf, qcow2({ cryptMethod: 1 }), { ...refused(/encrypt\.key-secret/, VERDICT), info: { exit: 0, stdout: /encrypted: yes/ } }),
  });

  const sparse = qemuMade('vmdk', '1M');
  cases.push(c('vmdk-grain-0', ovf, patchSparse(sparse, { granularity: 0n }), bad()));
  cases.push(c('vmdk-grain-2^63', ovf, patchSparse(sparse, { granularity: 1n << 63n }), bad()));
  cases.push(c('vmdk-capacity-2^63', ovf, patchSparse(sparse, { capacity: 1n << 63n }), sizeUnknown()));
  cases.push(c('vmdk-gtes-2^32-1', ovf, patchSparse(sparse, { gtesPerGt: 0xffffffffn }), bad()));
  cases.push(c('vmdk-gd-past-eof', ovf, patchSparse(sparse, { gdOffset: 1n << 50n, rgdOffset: 1n << 50n }), fine()));
  cases.push(c('vmdk-desc-size-huge', ovf, patchSparse(sparse, { descSize: 1n << 40n }), fine()));
  const vhdx = qemuMade('vhdx', '1M');
  cases.push(c('vhdx-bat-past-eof', ovf, vhdxRegionPastEof(vhdx, 'bat', crc32c), fine()));
  cases.push(c('vhdx-metadata-past-eof', ovf, vhdxRegionPastEof(vhdx, 'metadata', crc32c), bad()));

  const desc = 'hostile vmdk descriptor';
  const local = { 'flat.raw': Buffer.alloc(4096) };
  cases.push(c('vmdk-desc-nuls', desc, Buffer.concat([Buffer.from(descriptor({ extents: [{ sectors: 8, type: 'FLAT', file: 'flat.raw' }] }).slice(0, 60)), Buffer.alloc(4096), Buffer.from('\nRW 8 FLAT "/etc/passwd" 0\n')]), bad(), local));
  cases.push(c('vmdk-desc-10000-extents', desc, descriptor({ extents: Array.from({ length: 10000 }, () => ({ sectors: 8, type: 'FLAT', file: 'flat.raw' })) }), vmdkManyExtents, local));
  cases.push(c('vmdk-desc-extent-2^64-sectors', desc, descriptor({ extents: [{ sectors: '18446744073709551615', type: 'FLAT', file: 'flat.raw' }] }), bad(), local));
  cases.push(c('vmdk-desc-extent-2^63-sectors', desc, descriptor({ extents: [{ sectors: (1n << 63n).toString(), type: 'FLAT', file: 'flat.raw' }] }), bad(), local));
  // qemu skips an extent line with a negative size: the disk has no extent and is 0 bytes long
  // (map, check and compare say so; qemu's info and convert abort on an assertion instead).
  cases.push(c('vmdk-desc-extent-negative', desc, descriptor({ extents: [{ sectors: -8, type: 'FLAT', file: 'flat.raw' }] }), fine(/virtual size: 0 B \(0 bytes\)/), local));
  cases.push(c('vmdk-desc-offset-huge', desc, descriptor({ extents: [{ sectors: 8, type: 'FLAT', file: 'flat.raw', offset: 2 ** 52 }] }), opens(undefined, UNSAFE), local));
  cases.push(c('vmdk-desc-4mib', desc, descriptor({ extents: [{ sectors: 8, type: 'FLAT', file: 'flat.raw' }], extra: `ddb.comment = "${'x'.repeat(4 * 1024 * 1024)}"` }), fine(), local));
  cases.push(c('vmdk-desc-unknown-type', desc, descriptor({ createType: 'twoGbMaxExtentSparse"; rm -rf /', extents: [{ sectors: 8, type: 'FLAT', file: 'flat.raw' }] }), fine(), local));

  // Truncated headers: every format's header cut short.
  const trunc = 'truncated header';
  // A header cut inside its fields is refused; one cut after them reads its tables as zeros.
  const cut = (name: string, bytes: Buffer, at: number, expect: Expectations = bad()) => cases.push(c(`truncated-${name}-${at}`, trunc, bytes.subarray(0, at), expect));
  const q = qcow2();
  for (const at of [4, 20, 71]) cut('qcow2', q, at);
  cut('qcow2', q, 104, fine());
  cut('qcow2-l1', qcow2({ data: new Map([[0, Buffer.alloc(512, 1)]]) }), 3 * 65536 + 4, fine());
  for (const at of [4, 300]) cut('vmdk-sparse', sparse, at);
  const vpc = qemuMade('vpc', '1M');
  cut('vpc', vpc, 100);
  cut('vpc-dynamic', vpc, 1000);
  for (const at of [8, 65536, 200 * 1024]) cut('vhdx', vhdx, at);
  cut('luks', Buffer.concat([Buffer.from('LUKS\xba\xbe\x00\x01', 'latin1'), Buffer.alloc(92)]), 100, bad(undefined, ANY_VERDICT_UNSAFE_OR_UNREAD));
  const probeOnly: [string, Buffer][] = [
    ['qcow1', Buffer.concat([Buffer.from('QFI\xfb\x00\x00\x00\x01', 'latin1'), Buffer.alloc(40)])],
    ['vdi', (() => { const b = Buffer.alloc(512); b.writeUInt32LE(0xbeda107f, 0x40); return b; })()],
    ['qed', Buffer.from('QED\x00', 'latin1')],
    ['parallels', (() => { const b = Buffer.alloc(64); b.write('WithoutFreeSpace'); b.writeUInt32LE(2, 16); return b; })()],
    ['bochs', (() => { const b = Buffer.alloc(512); b.write('Bochs Virtual HD Image'); b.write('Redolog', 32); b.write('Growing', 48); b.writeUInt32LE(0x20000, 64); return b; })()],
    ['cloop', Buffer.from('#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n\0\0')],
  ];
  for (const [name, bytes] of probeOnly) cut(name, bytes, bytes.length, bad(undefined, ANY_VERDICT_UNSAFE_OR_UNREAD));

  // Polyglots: one file that two formats claim.
  const poly = 'polyglot';
  const withAt = (base: Buffer, at: number, bytes: Buffer): Buffer => {
    const out = Buffer.alloc(Math.max(base.length, at + bytes.length));
    base.copy(out);
    bytes.copy(out, at);
    return out;
  };
  const vmdkText = Buffer.from(descriptor({ extents: [{ sectors: 2048, type: 'FLAT', file: '/etc/passwd' }] }));
  cases.push({ ...c('qcow2+vmdk-descriptor', poly, withAt(qcow2(), 512, vmdkText), fine(/file format: qcow2/)), targets: ['/etc/passwd'] });
  const elf = Buffer.from('7f454c460201010000000000000000000200', 'hex');
  cases.push(c('elf-then-qcow2', poly, withAt(Buffer.concat([elf, Buffer.alloc(65536 - elf.length)]), 65536, qcow2()), bad(/determine image format/, UNSAFE)));
  cases.push(c('qcow2-with-elf-data', poly, qcow2({ data: new Map([[0, Buffer.concat([elf, Buffer.alloc(100)])]]) }), opens(/file format: qcow2/, SAFE)));
  const mbr = Buffer.alloc(512);
  mbr.writeUInt8(0x83, 446 + 4);
  mbr.writeUInt32LE(63, 446 + 8);
  mbr.writeUInt32LE(1000, 446 + 12);
  mbr[510] = 0x55;
  mbr[511] = 0xaa;
  cases.push(c('mbr+qcow2', poly, withAt(qcow2(), 446, mbr.subarray(446)), fine(/file format: qcow2/)));
  cases.push(c('iso+qcow2', poly, withAt(qcow2({ data: new Map([[0, Buffer.alloc(512, 1)]]) }), 32769, Buffer.from('CD001\x01', 'latin1')), fine(/file format: qcow2/)));
  const gpt = Buffer.from('EFI PART\x00\x00\x01\x00\x5c\x00\x00\x00', 'latin1');
  cases.push(c('gpt+vhdx', poly, withAt(vhdx, 512, gpt), fine(/file format: vhdx/)));
  cases.push(c('vmdk-descriptor+qcow2-at-1m', poly, withAt(Buffer.from(descriptor({ extents: [{ sectors: 2048, type: 'FLAT', file: 'top' }] })), 1048576, qcow2()), refused(/cannot also be its extent/, UNSAFE)));

  // Raw content with no partition table: instar does not fall back to raw (qemu does).
  const raw = 'raw, no partition table';
  cases.push(c('raw-zeros', raw, Buffer.alloc(1048576), bad(/determine image format/, UNSAFE)));
  cases.push(c('raw-text', raw, Buffer.from('#!/bin/sh\necho not a disk\n'.repeat(100)), bad(/determine image format/, UNSAFE)));
  cases.push(c('raw-random', raw, pseudoRandom(65536), bad(/determine image format/, UNSAFE)));
  cases.push(c('raw-empty', raw, Buffer.alloc(0), fine(/virtual size: 0 B/)));
  cases.push(c('raw-with-mbr', raw, withAt(Buffer.alloc(1048576), 0, mbr), opens(/file format: raw/, SAFE)));
  return cases;
}

function pseudoRandom(n: number): Buffer {
  const b = Buffer.alloc(n);
  let x = 0x2545f491;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

/** qemu-img (and instar) read an over-long zlib stream as its first cluster's worth of bytes. */
const zlibBomb_: Expectations = opens(undefined, VERDICT);

/** The bomb is in the data, not the metadata: info opens; reading the cluster must fail or stop at the cluster size. */
const bombRead: Expectations = unreadable(/Input\/output error/);
/** 10 000 extents of one small local file: instar caps a descriptor at 1024 extents (qemu has no cap). */
const vmdkManyExtents: Expectations = refused(/more than 1024 extents/, UNSAFE);
