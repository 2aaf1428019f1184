// convert -n into an existing VMDK whose extents are all flat (monolithicFlat, twoGbMaxExtentFlat):
// qemu's vmdk driver writes the guest bytes into the extent files in place (zeros as data: flat
// extents have no zeroed grains), and after the first piece gives the descriptor file a new
// random CID (cid-rewrite.ts). qemu writes the 20-sector CID area only as far as the descriptor
// file's length rounded up to a sector (measured: a 337-byte descriptor becomes 512 bytes).
import { randomInt } from 'node:crypto';
import { readAt } from '../bytes.ts';
import { ImageError, type BlockDevice } from '../types.ts';
import { checkWriteRange, writableOutput } from '../writer-checks.ts';
import { CID_AREA_BYTES } from './descriptor.ts';
import { cidUpdatable, rewriteCid } from './cid-rewrite.ts';
import type { FlatExtent } from './flat-extent.ts';
import type { VmdkImage } from './image.ts';

const SECTOR = 512;

interface Placed {
  start: number;
  end: number;
  dev: BlockDevice;
  /** Where the extent's first byte lies in its file. */
  at: number;
}

class FlatInPlace {
  private cidDone = false;

  constructor(private readonly descriptor: BlockDevice, private readonly size: number, private readonly extents: Placed[], private readonly cid: () => number) {}

  write(data: Uint8Array, offset: number): void {
    checkWriteRange(data, offset, this.size);
    const end = offset + data.length;
    for (const e of this.extents) {
      const from = Math.max(offset, e.start);
      const to = Math.min(end, e.end);
      if (from >= to) continue;
      e.dev.write!(data.subarray(from - offset, to - offset), e.at + from - e.start);
      this.updateCid();
    }
  }

  private updateCid(): void {
    if (this.cidDone) return;
    const area = rewriteCid(readAt(this.descriptor, 0, CID_AREA_BYTES), this.cid());
    const length = Math.min(CID_AREA_BYTES, Math.ceil(this.descriptor.size / SECTOR) * SECTOR);
    writableOutput(this.descriptor)(area.subarray(0, length), 0);
    this.cidDone = true;
  }

  finish(): void {}
}

const FLAT_TYPES = new Set(['monolithicFlat', 'twoGbMaxExtentFlat']);

/** The writer for a flat VMDK (its descriptor file `dev`), or why instar does not write into it. */
export function vmdkFlatInPlaceWriter(dev: BlockDevice, image: VmdkImage, cid?: number): FlatInPlace | { refused: string } | undefined {
  const { createType, extents, backingName } = image.state;
  if (!FLAT_TYPES.has(createType) || extents.length === 0 || !extents.every((e) => e.ext.flat)) return undefined;
  const refused = (why: string) => ({ refused: `instar cannot convert into this vmdk image (${why}); nothing was written` });
  if (backingName !== undefined) return refused('it has a parent');
  if (!cidUpdatable(readAt(dev, 0, CID_AREA_BYTES))) return refused('its descriptor has no parentCID');
  const placed: Placed[] = [];
  for (const e of extents) {
    const ext = e.ext as FlatExtent;
    if (!ext.dev.write) throw new ImageError('the host did not grant the extent files for writing');
    const at = Number(ext.start);
    if (at < 0 || at + (e.end - e.start) > ext.dev.size) return refused(`its extent '${e.file}' lies past the end of its file`);
    if (ext.dev === dev) return refused(`its extent '${e.file}' is its descriptor file`);
    for (const p of placed) {
      if (p.dev === ext.dev && at < p.at + (p.end - p.start) && p.at < at + (e.end - e.start)) return refused(`its extent '${e.file}' overlaps another one`);
    }
    placed.push({ start: e.start, end: e.end, dev: ext.dev, at });
  }
  return new FlatInPlace(dev, image.virtualSize, placed, () => cid ?? randomInt(0, 2 ** 32));
}
