// An opened VMDK: the extents laid end to end, read and mapped the way qemu's vmdk driver does.
import type { BlockDevice, Extent, FormatSpecific, Image, NodeInfo, SizeQueryFailure } from '../types.ts';
import { sizeFailureError } from '../sector-count.ts';
import { fileRun } from '../raw/holes.ts';
import { readError } from './errors.ts';
import type { FlatExtent } from './flat-extent.ts';
import { GrainStatus, type GrainExtent } from './sparse-extent.ts';

export interface PlacedExtent {
  ext: GrainExtent | FlatExtent;
  /** Guest byte range [start, end). */
  start: number;
  end: number;
  /** The descriptor's type word; '' for a sparse file's own extent (qemu reports it so). */
  type: string;
  /** The file as the descriptor names it; '' for the image file itself. */
  file: string;
  /**
   * qemu's name for the file (reported as the extent's `filename`): the image's display name, or
   * the descriptor's name combined with the image's directory. Without a display name in the
   * open context, the raw name ('' for the image itself) for the host to replace.
   */
  fileName: string;
}

export interface VmdkState {
  createType: string;
  cid: number;
  parentCid: number;
  backingName?: string;
  extents: PlacedExtent[];
  /** The extents' total passes int64 bytes (sector-count.ts): the wrapped size, no extents placed. */
  sizeQuery?: { virtualSize: number; sizeFailure: SizeQueryFailure };
}

export class VmdkImage implements Image {
  readonly format = 'vmdk';
  /** qemu's block status answers one grain at a time. */
  get blockStatus(): number | undefined { return this.info()['cluster-size']; }
  readonly virtualSize: number;
  readonly sizeFailure?: SizeQueryFailure;
  private backing?: Image;
  private hint = 0;

  constructor(readonly state: VmdkState) {
    const last = state.extents.at(-1);
    this.virtualSize = state.sizeQuery?.virtualSize ?? (last ? last.end : 0);
    this.sizeFailure = state.sizeQuery?.sizeFailure;
  }

  /** Which file each entry of format-specific.data.extents came from, in the same order. */
  get extentFiles(): { role: 'image' | 'extent'; name: string }[] {
    return this.state.extents.map((e) => (e.file === '' ? { role: 'image', name: '' } : { role: 'extent', name: e.file }));
  }

  /** The opened parent, if any (formats/vmdk/inplace.ts copies from it into new grains). */
  get parent(): Image | undefined {
    return this.backing;
  }

  /** The opened parent (`parentFileNameHint`); without one, unallocated grains read as zeros. */
  attachBacking(backing: Image): void {
    this.backing = backing;
  }

  info(): NodeInfo {
    const s = this.state;
    const first = s.extents[0]?.ext;
    const info: NodeInfo = { format: 'vmdk', 'virtual-size': this.virtualSize };
    // qemu's get_info fails (and info omits these) when extents differ in kind or grain size.
    if (first && s.extents.every((e) => sameKind(first, e.ext))) {
      info['dirty-flag'] = false;
      if (!first.flat && first.clusterBytes !== 0) info['cluster-size'] = first.clusterBytes;
    }
    if (s.backingName) {
      info['backing-filename'] = s.backingName;
      info['backing-filename-format'] = 'vmdk';
    }
    info['format-specific'] = this.formatSpecific();
    return info;
  }

  private formatSpecific(): FormatSpecific {
    const s = this.state;
    const extents = s.extents.map((e) => {
      const x: Record<string, unknown> = { filename: e.fileName, format: e.type, 'virtual-size': Number(e.ext.sectors) * 512 };
      if (!e.ext.flat) x['cluster-size'] = e.ext.clusterBytes;
      if (e.ext.compressed) x.compressed = true;
      return x;
    });
    return { type: 'vmdk', data: { 'create-type': s.createType, cid: s.cid, 'parent-cid': s.parentCid, extents } };
  }

  private find(offset: number): PlacedExtent {
    const list = this.state.extents;
    // A disk without extents is 0 bytes long: nothing lies at any offset.
    if (list.length === 0) throw readError('EIO');
    let i = this.hint < list.length && list[this.hint].start <= offset ? this.hint : 0;
    if (list[i].end <= offset) {
      let lo = i + 1;
      let hi = list.length - 1;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (list[mid].end <= offset) lo = mid + 1;
        else hi = mid;
      }
      i = lo;
    }
    this.hint = i;
    return list[i];
  }

  read(buf: Uint8Array, offset: number): void {
    if (this.sizeFailure) throw sizeFailureError(this.sizeFailure);
    if (offset < 0 || offset + buf.length > this.virtualSize) throw readError('EIO');
    let done = 0;
    while (done < buf.length) {
      const pos = offset + done;
      const placed = this.find(pos);
      const rel = pos - placed.start;
      const room = Math.min(buf.length - done, placed.end - pos);
      const ext = placed.ext;
      if (ext.flat) {
        ext.read(buf.subarray(done, done + room), rel);
        done += room;
        continue;
      }
      done += this.readSparse(ext, buf.subarray(done, done + room), rel, pos);
    }
  }

  /** Reads one run of grains with the same status (contiguous data merged into one read). */
  private readSparse(ext: GrainExtent, out: Uint8Array, rel: number, guestPos: number): number {
    // qemu's read path treats a grain it cannot look up like an unallocated one.
    const status = lookupForRead(ext, rel);
    let len = Math.min(out.length, ext.run);
    if (status === GrainStatus.Data) {
      const host = ext.hostOffset;
      const inGrain = rel % ext.clusterBytes;
      if (ext.compressed) {
        ext.readGrain(out.subarray(0, len), host, inGrain);
        return len;
      }
      // Extend over following grains stored right after this one.
      while (len < out.length && ext.lookup(rel + len) === GrainStatus.Data && ext.hostOffset === host + inGrain + len) {
        len = Math.min(out.length, len + ext.run);
      }
      ext.readGrain(out.subarray(0, len), host, inGrain);
      return len;
    }
    while (len < out.length && lookupForRead(ext, rel + len) === status) len = Math.min(out.length, len + ext.run);
    if (status === GrainStatus.Unallocated && this.backing) this.readBacking(out.subarray(0, len), guestPos);
    else out.fill(0, 0, len);
    return len;
  }

  private readBacking(out: Uint8Array, pos: number): void {
    const b = this.backing!;
    // qemu refuses to read through a parent whose CID is not the parentCID recorded here.
    if (!(b instanceof VmdkImage) || b.state.cid !== this.state.parentCid) throw readError('EINVAL');
    // qemu asks the parent's size before any read of it, past its end too: that fails.
    if (b.sizeFailure) throw sizeFailureError(b.sizeFailure);
    const inside = Math.max(0, Math.min(out.length, b.virtualSize - pos));
    if (inside > 0) b.read(out.subarray(0, inside), pos);
    out.fill(0, inside);
  }

  extent(offset: number, length: number): Extent {
    if (this.sizeFailure) throw sizeFailureError(this.sizeFailure);
    const placed = this.find(offset);
    const rel = offset - placed.start;
    const max = Math.min(length, placed.end - offset);
    const ext = placed.ext;
    if (ext.flat) {
      const exact = ext.hostOffset(rel);
      const host = Number(exact);
      // qemu asks the extent file's file system too: a hole there is data that reads as zeros.
      // A negative int64 (the start's shift wrapped) is past the end of any file: zeros as well.
      const run = host >= 0 ? fileRun(ext.dev, host, max) : { length: max, hole: true };
      const e: Extent = { offset, length: run.length, kind: 'data', depth: 0, hostOffset: host, file: ext.dev, zeroData: run.hole || undefined };
      if (!Number.isSafeInteger(host)) e.hostOffsetExact = exact;
      return e;
    }
    const status = ext.lookup(rel);
    if (status === GrainStatus.Error) throw readError('EIO');
    let len = Math.min(max, ext.run);
    const known = ext.hostOffset >= 0;
    const host = ext.hostOffset + (rel % ext.clusterBytes);
    const contiguous = status === GrainStatus.Data && !ext.compressed;
    while (len < max && ext.lookup(rel + len) === status && (!contiguous || ext.hostOffset === host + len)) len = Math.min(max, len + ext.run);
    if (status === GrainStatus.Data) {
      if (ext.compressed) return { offset, length: len, kind: 'data', compressed: true, depth: 0 };
      const file = (ext as { dev?: BlockDevice }).dev;
      return known ? { offset, length: len, kind: 'data', depth: 0, hostOffset: host, file } : { offset, length: len, kind: 'data', depth: 0 };
    }
    if (status === GrainStatus.Zeroed) return { offset, length: len, kind: 'zero', depth: 0 };
    // A parent whose size qemu cannot tell is asked anyway (its "past the end" check needs that
    // size), and the block status fails, wherever the hole is (as qcow2's, qcow's and qed's do).
    if (this.backing?.sizeFailure) throw sizeFailureError(this.backing.sizeFailure);
    if (this.backing && offset < this.backing.virtualSize) {
      const below = this.backing.extent(offset, Math.min(len, this.backing.virtualSize - offset));
      return { ...below, depth: below.depth + 1 };
    }
    return { offset, length: len, kind: 'unallocated', depth: 0 };
  }
}

function lookupForRead(ext: GrainExtent, offset: number): GrainStatus {
  const s = ext.lookup(offset);
  return s === GrainStatus.Error ? GrainStatus.Unallocated : s;
}

function sameKind(a: GrainExtent | FlatExtent, b: GrainExtent | FlatExtent): boolean {
  return a.flat === b.flat && a.compressed === b.compressed && (a.flat || a.clusterBytes === (b as GrainExtent).clusterBytes);
}
