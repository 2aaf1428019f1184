// convert over data that the image knows reads as zeros without reading it (Image.zeroRun): VHDX
// blocks with no data, and VHDX/VHD blocks that lie over holes in the file by the host's
// SEEK_DATA answer. qemu reads those bytes and finds them zero; instar skips the read. Output and
// -p lines must stay qemu's, and the copy must really not read the holes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { vhdxDriver } from '../../src/formats/vhdx/driver.ts';
import { vpcDriver } from '../../src/formats/vpc/driver.ts';
import type { BlockDevice, Driver } from '../../src/formats/types.ts';
import { FdDevice } from '../../src/io/fd-device.ts';
import { fileDataRuns } from '../../src/host/data-runs.ts';
import { copyToRaw } from '../../src/ops/convert/copy.ts';
import { runInstar, runQemu, VERSIONS } from '../helpers/oracles.ts';
import { patternBytes, qemu, qemuIo, sha256, tempDir } from './helpers.ts';

const MiB = 1024 * 1024;
const SIZE = 24 * MiB;
let dir: string;
let cleanup: () => void;
before(() => ({ dir, cleanup } = tempDir()));
after(() => cleanup());

/** A source with whole MiBs of zeros (unallocated blocks) between 64 KiB blocks of mixed content. */
function writeSource(path: string): void {
  const bytes = patternBytes(SIZE, 11);
  bytes.fill(0, 4 * MiB, 7 * MiB);
  bytes.fill(0, 13 * MiB, 13 * MiB + MiB / 2);
  bytes.fill(0, 20 * MiB);
  writeFileSync(path, bytes);
}

/**
 * `name` in `format` (with `-o opts`) from the source, zeros then written into allocated blocks
 * (qemu-io), and a copy whose zero runs are holes in the file (cp --sparse=always).
 */
function sparseImage(name: string, format: string, opts: string): string {
  const dense = join(dir, `${name}-dense`);
  qemu(['convert', '-f', 'raw', '-O', format, '-o', opts, join(dir, 'src.raw'), dense]);
  qemuIo(dense, ['write -P 0 8M 2M', 'write -P 0 15M 64k', 'write -P 0x3c 22M 4k'], format);
  const sparse = join(dir, name);
  const cp = spawnSync('cp', ['--sparse=always', dense, sparse]);
  assert.equal(cp.status, 0, String(cp.stderr));
  return sparse;
}

const images: [string, string, Driver][] = [];
before(() => {
  writeSource(join(dir, 'src.raw'));
  images.push(['vhdx', sparseImage('a.vhdx', 'vhdx', 'block_size=1M'), vhdxDriver]);
  images.push(['vhdx', sparseImage('b.vhdx', 'vhdx', 'block_size=8M'), vhdxDriver]);
  images.push(['vpc', sparseImage('c.vhd', 'vpc', 'subformat=dynamic'), vpcDriver]);
  images.push(['vpc', sparseImage('d.vhd', 'vpc', 'subformat=fixed'), vpcDriver]);
});

test('the sparse copies have holes inside their data (else this file tests nothing)', () => {
  for (const [, path] of images) {
    const fd = openSync(path, 'r');
    try {
      const runs = fileDataRuns(fd);
      assert.ok(runs && runs.length > 1, `${path}: data runs ${JSON.stringify(runs)}`);
    } finally {
      closeSync(fd);
    }
  }
});

test('convert -O raw (with -p, and with -S 0) of images with holes: qemu-img\'s bytes and lines', () => {
  for (const [format, path] of images) {
    for (const extra of [['-p'], ['-S', '0']]) {
      const args = ['convert', ...extra, '-f', format, '-O', 'raw', path];
      const theirs = VERSIONS.map((v) => {
        const out = join(dir, `out-${v}.raw`);
        const r = runQemu(v, [...args, out], { cwd: dir });
        assert.equal(r.status, 0, `qemu-img ${v}: ${r.stderr}`);
        return { stdout: r.stdout, hash: sha256(out) };
      });
      for (const sandbox of ['--sandbox=none', '--sandbox=auto']) {
        const out = join(dir, 'out-instar.raw');
        const r = runInstar([...args, out, sandbox], { cwd: dir });
        assert.equal(r.status, 0, `instar ${sandbox}: ${r.stderr}`);
        for (const t of theirs) {
          assert.equal(r.stdout, t.stdout, `${path} ${extra.join(' ')} ${sandbox}: progress lines`);
          assert.equal(sha256(out), t.hash, `${path} ${extra.join(' ')} ${sandbox}: bytes`);
        }
      }
    }
  }
});

/** A device that records where it was read. */
function recording(dev: BlockDevice): BlockDevice & { reads: [number, number][] } {
  const reads: [number, number][] = [];
  return {
    size: dev.size,
    allocated: dev.allocated,
    dataRuns: dev.dataRuns,
    reads,
    read(buf, pos) {
      reads.push([pos, buf.length]);
      return dev.read(buf, pos);
    },
  };
}

/** A raw output in memory that starts as zeros. */
function memoryOutput(size: number): BlockDevice & { bytes: Buffer } {
  const bytes = Buffer.alloc(size);
  return { size, bytes, read: (buf, pos) => bytes.copy(buf, 0, pos), write: (buf, pos) => void bytes.set(buf, pos) };
}

const inHole = (runs: readonly (readonly [number, number])[], pos: number, size: number) => pos < size && !runs.some(([s, e]) => s <= pos && pos < e);

test('the copy reads no hole in the file, and what zeroRun skips reads as zeros', async () => {
  for (const [, path] of images) {
    const fd = openSync(path, 'r');
    try {
      const runs = fileDataRuns(fd)!;
      const dev = recording(new FdDevice(fd, false, { runs }));
      const image = (images.find(([, p]) => p === path)![2]).open(dev, { writable: false });
      for (let at = 0; at < image.virtualSize; at += MiB) {
        const zeros = image.zeroRun!(at, MiB);
        const buf = Buffer.alloc(MiB, 1);
        image.read(buf, at);
        assert.ok(buf.subarray(0, zeros).every((b) => b === 0), `${path}: zeroRun(${at}) = ${zeros} but the bytes are not zeros`);
      }
      dev.reads.length = 0;
      const out = memoryOutput(image.virtualSize);
      await copyToRaw({ images: [image], output: out, sparseSize: 4096, targetIsZero: true });
      const intoHoles = dev.reads.filter(([pos]) => inHole(runs, pos, dev.size));
      assert.deepEqual(intoHoles, [], `${path}: reads that start in a hole of the file`);
      const whole = Buffer.alloc(image.virtualSize);
      image.read(whole, 0);
      assert.ok(out.bytes.equals(whole), `${path}: the copy differs from the image's bytes`);
    } finally {
      closeSync(fd);
    }
  }
});
