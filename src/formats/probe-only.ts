// Formats instar recognises but cannot read yet. Each probe scores like the matching qemu driver's
// probe, so that detection picks the same format qemu would (and never mistakes one for raw);
// opening one fails with a clear message instead of pretending.
import { ImageError, type Driver } from './types.ts';
import { LUKS_MAGIC } from './luks/header.ts';

const ascii = (head: Uint8Array, at: number, text: string): boolean =>
  head.length >= at + text.length && Buffer.from(head.buffer, head.byteOffset + at, text.length).toString('latin1') === text;
const u32le = (head: Uint8Array, at: number): number =>
  head.length >= at + 4 ? Buffer.from(head.buffer, head.byteOffset, head.length).readUInt32LE(at) : -1;
const u32be = (head: Uint8Array, at: number): number =>
  head.length >= at + 4 ? Buffer.from(head.buffer, head.byteOffset, head.length).readUInt32BE(at) : -1;
/** strcmp() of a fixed-size C string field against `text`. */
const cField = (head: Uint8Array, at: number, size: number, text: string): boolean =>
  ascii(head, at, text) && text.length < size && head[at + text.length] === 0;

const CLOOP_V2_MAGIC = '#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n';

/** qemu's probe functions for the formats below (block/<name>.c). */
export const probes: Record<string, (head: Uint8Array, fileName?: string) => number> = {
  qcow: (h) => (h.length >= 48 && ascii(h, 0, 'QFI\xfb') && u32be(h, 4) === 1 ? 100 : 0),
  vhdx: (h) => (ascii(h, 0, 'vhdxfile') ? 100 : 0),
  vdi: (h) => (h.length >= 512 && u32le(h, 0x40) === 0xbeda107f ? 100 : 0),
  qed: (h) => (h.length >= 64 && u32le(h, 0) === 0x00444551 ? 100 : 0),
  parallels: (h) =>
    h.length >= 64 && (ascii(h, 0, 'WithoutFreeSpace') || ascii(h, 0, 'WithouFreSpacExt')) && u32le(h, 16) === 2 ? 100 : 0,
  // qemu's dmg probe looks at the name only.
  dmg: (_h, name) => (name && name.length > 4 && name.endsWith('.dmg') ? 2 : 0),
  bochs: (h) =>
    h.length >= 512 &&
    cField(h, 0, 32, 'Bochs Virtual HD Image') &&
    cField(h, 32, 16, 'Redolog') &&
    cField(h, 48, 16, 'Growing') &&
    (u32le(h, 64) === 0x00020000 || u32le(h, 64) === 0x00010000)
      ? 100
      : 0,
  cloop: (h) => (h.length > CLOOP_V2_MAGIC.length && ascii(h, 0, CLOOP_V2_MAGIC) ? 2 : 0),
  luks: (h) =>
    h.length >= 8 && Buffer.from(h.subarray(0, 6)).equals(LUKS_MAGIC) && ((h[6] << 8) | h[7]) === 1 ? 100 : 0,
};

function probeOnly(name: string): Driver {
  return {
    name,
    probe: probes[name],
    open: () => {
      throw new ImageError(`reading ${name} images is not supported by instar yet`);
    },
  };
}

export const probeOnlyDrivers: Driver[] = Object.keys(probes).map(probeOnly);
