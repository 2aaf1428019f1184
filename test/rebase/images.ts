// qcow2 images for the rebase and amend tests: made by qemu-img 10.0 at test time, some then edited
// into shapes qemu-img create never makes (unknown header fields and extensions, unknown autoclear
// bits, a size that is not whole sectors), which qemu's header rewrite still has rules for.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { runQemu } from '../helpers/oracles.ts';

/** Creates a qcow2 with `opts` (qemu-img create -o) in `dir` and returns its bytes. */
export function created(dir: string, name: string, opts: string, size = '1M', extra: string[] = []): Buffer {
  // Run in `dir`: qemu-img create opens a relative data_file name against its working directory.
  const r = runQemu('10.0', ['create', '-q', '-f', 'qcow2', ...(opts ? ['-o', opts] : []), ...extra, name, size], { cwd: dir });
  assert.equal(r.status, 0, r.stderr);
  return readFileSync(join(dir, name));
}

/** One header extension record: magic, length, data padded to 8 bytes. */
export function extension(magic: number, data: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(magic, 0);
  head.writeUInt32BE(data.length, 4);
  return Buffer.concat([head, data, Buffer.alloc((8 - (data.length % 8)) % 8)]);
}

/**
 * The image with its extension area (from the header's end to the end marker) replaced by
 * `records` (the end marker is added), and with `headerFields` extra bytes of header (version 3).
 */
export function withExtensions(image: Buffer, records: Buffer[], headerFields = Buffer.alloc(0)): Buffer {
  const out = Buffer.from(image);
  const cluster = 2 ** out.readUInt32BE(20);
  assert.equal(out.readBigUInt64BE(8), 0n, 'an image without a backing file');
  const start = out.readUInt32BE(4) === 3 ? 112 : 72;
  if (headerFields.length > 0) out.writeUInt32BE(112 + headerFields.length, 100);
  const area = Buffer.concat([headerFields, ...records, Buffer.alloc(8)]);
  out.fill(0, start, cluster);
  area.copy(out, start);
  return out;
}

/** The feature name table extension as found in the image (to keep it where qemu-img create put it). */
export function featureTable(image: Buffer): Buffer {
  const at = 112;
  assert.equal(image.readUInt32BE(at), 0x6803f857, 'a feature table right after the header');
  return image.subarray(at, at + 8 + image.readUInt32BE(at + 4));
}

/**
 * A qcow2 whose bitmaps extension lost its autoclear bit (as a program without bitmap support
 * leaves it): qemu's writable open warns and rewrites the header without the extension.
 */
export function staleBitmaps(dir: string, name: string): Buffer {
  created(dir, name, '');
  const r = runQemu('10.0', ['bitmap', '--add', name, 'b0'], { cwd: dir });
  assert.equal(r.status, 0, r.stderr);
  const bytes = readFileSync(join(dir, name));
  bytes[95] &= ~1;
  return bytes;
}
