// What the VHDX and LUKS writer tests share: create's layout and the writer fed in-process; the file with what is random in it masked (both headers,
// the page 83 GUID, each log entry's GUID and checksum, checked first), so that instar's file and
// qemu's can be compared byte for byte. The headers differ by more than GUIDs (qemu's write
// path bumps their sequence numbers): instar's must carry no log GUID, so no reader replays.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, ftruncateSync, openSync, readSync, statSync, writeSync } from 'node:fs';
import { crc32c } from '../../src/formats/vhdx/crc32c.ts';
import { findDriver } from '../../src/formats/registry.ts';
import { FdDevice } from '../../src/io/fd-device.ts';
import { qemuFullVersion } from '../../src/host/commands/create-options.ts';
import type { CreatePlan, ImageWriter } from '../../src/formats/types.ts';
import { optionMap } from './vpc-vmdk-harness.ts';

const KiB = 1024;
const MiB = 1024 * KiB;

export function maskVhdx(file: Buffer, label: string): Buffer {
  const out = Buffer.from(file);
  for (const at of [64 * KiB, 128 * KiB]) {
    assert.equal(out.toString('latin1', at, at + 4), 'head', `${label}: header at ${at}`);
    assert.ok(out.subarray(at + 48, at + 64).equals(Buffer.alloc(16)), `${label}: the header at ${at} names a log`);
    out.fill(0, at, at + 4 * KiB);
  }
  const metadata = Number(out.readBigUInt64LE(192 * KiB + 64));
  out.fill(0, metadata + 64 * KiB + 16, metadata + 64 * KiB + 32);
  const logOffset = Number(file.readBigUInt64LE(64 * KiB + 72));
  const logLength = file.readUInt32LE(64 * KiB + 68);
  for (let p = logOffset; p < logOffset + logLength; p += 8 * KiB) {
    if (out.toString('latin1', p, p + 4) !== 'loge') continue;
    const entry = Buffer.from(out.subarray(p, p + 8 * KiB));
    const stored = entry.readUInt32LE(4);
    entry.fill(0, 4, 8);
    assert.equal(crc32c(entry), stored, `${label}: log entry checksum at ${p}`);
    out.fill(0, p + 4, p + 8);
    out.fill(0, p + 32, p + 48);
  }
  return out;
}

export { MiB };

/** create's layout of `format` sized as `src` into `out` as qemu `version` would make it, and the writer on it. */
export function openWriter(format: string, options: string, size: number, out: string, version: string, secrets?: ReadonlyMap<string, Uint8Array>): { writer: ImageWriter; plan: CreatePlan; fd: number } {
  const driver = findDriver(format)!;
  const [major, minor] = version.split('.').map(Number);
  const env = { now: Math.floor(Date.now() / 1000), filename: out, qemuVersion: qemuFullVersion({ major, minor }), randomBytes: (n: number) => randomBytes(n), secrets };
  const plan = driver.create!.plan(optionMap(options), BigInt(size), env);
  const layout = driver.create!.layout(plan).image;
  const fd = openSync(out, 'w+');
  ftruncateSync(fd, layout.length);
  for (const w of layout.writes) writeSync(fd, w.bytes, 0, w.bytes.length, w.pos);
  return { writer: driver.writer!.open({ image: new FdDevice(fd, true), extents: [] }, plan), plan, fd };
}

/**
 * Writes the raw file `src` into a new `format` image `out` through the writer, 4 KiB at a time
 * (qemu-img convert's -S 4k), skipping zeros; fsyncs it, as the host does, so that the file
 * system's allocation is final when a test measures it.
 */
export function convertWithInstar(format: string, options: string, src: string, out: string, version: string, secrets?: ReadonlyMap<string, Uint8Array>): void {
  // qemu-img convert sizes the target in whole sectors.
  const size = Math.ceil(statSync(src).size / 512) * 512;
  const { writer, fd } = openWriter(format, options, size, out, version, secrets);
  const srcFd = openSync(src, 'r');
  try {
    const buf = Buffer.alloc(4096);
    const zeros = Buffer.alloc(4096);
    for (let pos = 0; pos < size; pos += 4096) {
      const piece = buf.subarray(0, Math.min(4096, size - pos));
      piece.fill(0);
      readSync(srcFd, piece, 0, piece.length, pos);
      if (!piece.equals(zeros.subarray(0, piece.length))) writer.write(piece, pos);
    }
    writer.finish();
    fsyncSync(fd);
  } finally {
    closeSync(srcFd);
    closeSync(fd);
  }
}
