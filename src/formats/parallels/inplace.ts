// convert -n into an existing Parallels image, as qemu's parallels driver writes into one: a
// cluster the BAT has is written in place; a new one is written whole at qemu's next host
// cluster, and the BAT is written last. qemu 8.2 changed the driver: write-zeroes over whole
// clusters now discards them (BAT entry cleared, the host cluster freed) and a new cluster takes
// the lowest free host cluster before the end of the data; before, zeros were written as data and
// new clusters always went at the end. `discards` picks the newer behaviour. qemu marks the header
// in use while it writes and clears the mark at close, so the header ends as it was. Images whose
// file does not end where their data does, with unused clusters inside their data, marked in use,
// or with sector-numbered entries (the old magic) are refused.
import { readAt, unitPieces } from '../bytes.ts';
import { ImageError, type BlockDevice } from '../types.ts';
import { checkWriteRange, writableOutput } from '../writer-checks.ts';
import { parseParallelsHeader } from './driver.ts';

const SECTOR = 512;
const BAT_OFFSET = 64;
const DATA_OFF_AT = 48;
const INUSE_AT = 44;
/** The BAT instar keeps in memory for one copy. */
const BAT_LIMIT = 256 * 1024 * 1024;

class ParallelsInPlace {
  private readonly put: (buf: Uint8Array, pos: number) => void;
  /** Host clusters discarded by this copy, reused lowest first. */
  private readonly free: number[] = [];
  readonly writeZeroes?: (offset: number, length: number) => void;

  constructor(dev: BlockDevice, private readonly size: number, private readonly cs: number, private readonly bat: Buffer, private dataEnd: number, discards: boolean) {
    this.put = writableOutput(dev);
    if (discards) this.writeZeroes = (offset, length) => this.zeroes(offset, length);
  }

  write(data: Uint8Array, offset: number): void {
    checkWriteRange(data, offset, this.size);
    for (const { index, within, piece } of unitPieces(data, offset, this.cs)) {
      let host = this.bat.readUInt32LE(index * 4);
      if (host !== 0) {
        this.put(piece, host * this.cs + within);
        continue;
      }
      host = this.allocate();
      this.bat.writeUInt32LE(host, index * 4);
      const cluster = Buffer.alloc(this.cs);
      cluster.set(piece, within);
      this.put(cluster, host * this.cs);
    }
  }

  private allocate(): number {
    if (this.free.length > 0) return this.free.shift()!;
    if (this.dataEnd >= 0xffff_ffff) throw new ImageError('instar refuses a Parallels cluster past the 32-bit BAT range');
    return this.dataEnd++;
  }

  /** qemu 8.2+: whole clusters are discarded (their bytes read as zeros); anything else is written as zeros. */
  private zeroes(offset: number, length: number): void {
    if (offset % this.cs !== 0 || length % this.cs !== 0) {
      for (let at = offset; at < offset + length; at += this.cs) this.write(new Uint8Array(Math.min(this.cs, offset + length - at)), at);
      return;
    }
    for (let index = offset / this.cs; index < (offset + length) / this.cs; index++) {
      const host = this.bat.readUInt32LE(index * 4);
      if (host === 0) continue;
      this.put(new Uint8Array(this.cs), host * this.cs);
      this.bat.writeUInt32LE(0, index * 4);
      this.free.push(host);
      this.free.sort((a, b) => a - b);
    }
  }

  finish(): void {
    this.put(this.bat, BAT_OFFSET);
  }
}

interface InPlaceState {
  size: number;
  cs: number;
  bat: Buffer;
  dataEnd: number;
}

export function parallelsInPlaceWriter(dev: BlockDevice, virtualSize: number, discards: boolean): ParallelsInPlace | { refused: string } {
  const state = inPlaceState(dev, virtualSize);
  return 'refused' in state ? state : new ParallelsInPlace(dev, state.size, state.cs, state.bat, state.dataEnd, discards);
}

/** Why instar would not write into this image, if it would not (the device may be read-only). */
export function parallelsInPlaceRefusal(dev: BlockDevice, virtualSize: number): { refused: string } | undefined {
  const state = inPlaceState(dev, virtualSize);
  return 'refused' in state ? state : undefined;
}

function inPlaceState(dev: BlockDevice, virtualSize: number): InPlaceState | { refused: string } {
  const raw = readAt(dev, 0, BAT_OFFSET);
  const header = parseParallelsHeader(raw);
  const refused = (why: string) => ({ refused: `instar cannot convert into this parallels image (${why}); nothing was written` });
  if (header.offMultiplier !== header.tracks) return refused('its BAT counts sectors (the old format)');
  if (raw.readUInt32LE(INUSE_AT) !== 0) return refused('it is marked in use');
  if (header.batEntries * 4 > BAT_LIMIT) return refused('its BAT is too large');
  const cs = header.tracks * SECTOR;
  const bat = Buffer.from(readAt(dev, BAT_OFFSET, header.batEntries * 4));
  const dataStart = raw.readUInt32LE(DATA_OFF_AT) * SECTOR || Math.ceil((BAT_OFFSET + bat.length) / SECTOR) * SECTOR;
  if (dataStart % cs !== 0) return refused('its data does not start at a cluster boundary');
  // qemu's data_end: past every cluster the BAT names; every cluster before it in use.
  const used = new Set<number>();
  let dataEnd = dataStart / cs;
  for (let i = 0; i < header.batEntries; i++) {
    const host = bat.readUInt32LE(i * 4);
    if (host === 0) continue;
    if (host < dataStart / cs || used.has(host)) return refused('its BAT names a cluster twice or inside its header');
    used.add(host);
    dataEnd = Math.max(dataEnd, host + 1);
  }
  if (used.size !== dataEnd - dataStart / cs) return refused('it has unused clusters inside its data');
  if (dev.size !== dataEnd * cs) return refused('its file does not end where its data does');
  return { size: Math.min(virtualSize, header.batEntries * cs), cs, bat, dataEnd };
}
