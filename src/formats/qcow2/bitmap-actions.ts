// The actions of qemu-img bitmap over the bitmaps qemu holds in memory, with the checks and words
// of qemu's QMP handlers (block_dirty_bitmap_add/remove/clear/enable/disable/merge) and of the
// qcow2 driver's qcow2_co_can_store_new_dirty_bitmap. Only --remove touches the file here (through
// ActionContext.removeFromDisk); the rest is stored when the image is closed.
import type { Qcow2Header } from './header.ts';
import { DirtyBits } from './bitmap-bits.ts';
import type { LiveBitmap } from './bitmap-state.ts';
import { MAX_BITMAP_DIRECTORY_SIZE } from './extensions.ts';

export type BitmapActionKind = 'add' | 'remove' | 'clear' | 'enable' | 'disable' | 'merge';

export interface BitmapActionSpec {
  kind: BitmapActionKind;
  /** --merge's source bitmap name. */
  source?: string;
}

/** A bitmap of the -b image, as it was loaded read-only. */
export interface SourceBitmap {
  name: Buffer;
  inconsistent: boolean;
  bits: DirtyBits;
}

export interface BitmapRequest {
  /** The bitmap every action applies to. */
  name: string;
  actions: BitmapActionSpec[];
  /** -g as qemu passes it on (a uint32), undefined for the default. */
  granularity?: number;
  /** The name qemu's messages give the image's node ("#block1NN"). */
  nodeName: string;
  /** The -b image's bitmaps; undefined without -b (merges then read this image's). */
  source?: SourceBitmap[];
}

export interface ActionContext {
  h: Qcow2Header;
  virtualSize: bigint;
  live(): LiveBitmap[];
  setLive(list: LiveBitmap[]): void;
  /** s->nb_bitmaps and s->bitmap_directory_size. */
  diskCount(): number;
  diskDirectorySize(): number;
  /** qcow2_co_remove_persistent_dirty_bitmap. */
  removeFromDisk(name: Buffer): void;
}

const MAX_NAME = 1023;
const MAX_BITMAPS = 65535;
const MAX_TABLE_SIZE = 0x8000000;
const MAX_PHYS_SIZE = 0x20000000n;

const notFound = (name: Buffer | string) => `Dirty bitmap '${name.toString()}' not found`;

/** bdrv_dirty_bitmap_check: an inconsistent bitmap is refused for everything but removal. */
function unusable(b: { name: Buffer; inconsistent: boolean }): string | undefined {
  if (!b.inconsistent) return undefined;
  return `Bitmap '${b.name.toString()}' is inconsistent and cannot be used\nTry block-dirty-bitmap-remove to delete this bitmap from disk`;
}

/** bdrv_get_default_bitmap_granularity for a qcow2 image: its cluster size within 4 KiB..64 KiB. */
function defaultGranularity(clusterSize: number): number {
  return Math.min(65536, Math.max(4096, clusterSize));
}

/** qcow2_co_can_store_new_dirty_bitmap's refusal, without its prefix; undefined when allowed. */
function cannotStore(ctx: ActionContext, name: Buffer, granularity: number): string | undefined {
  if (ctx.h.version < 3) return 'Cannot store dirty bitmaps in qcow2 v2 files';
  const bits = Math.log2(granularity);
  if (bits > 31) return 'Granularity exceeds maximum (2147483648 bytes)';
  if (bits < 9) return 'Granularity is under minimum (512 bytes)';
  const g = BigInt(granularity);
  const bytes = ((ctx.virtualSize + g - 1n) / g + 7n) / 8n;
  if (bytes > MAX_PHYS_SIZE || bytes > BigInt(MAX_TABLE_SIZE) * BigInt(ctx.h.clusterSize)) {
    return 'Too much space will be occupied by the bitmap. Use larger granularity';
  }
  if (name.length > MAX_NAME) return `Name length exceeds maximum (${MAX_NAME} characters)`;
  if (ctx.diskCount() === 0) return undefined;
  if (ctx.diskCount() >= MAX_BITMAPS) return 'Maximum number of persistent bitmaps is already reached';
  if (ctx.diskDirectorySize() + Math.ceil((24 + name.length) / 8) * 8 > MAX_BITMAP_DIRECTORY_SIZE) return 'Not enough space in the bitmap directory';
  return undefined;
}

function add(ctx: ActionContext, name: Buffer, req: BitmapRequest): string | undefined {
  if (name.length === 0) return 'Bitmap name cannot be empty';
  let granularity = req.granularity;
  if (granularity !== undefined) {
    if (granularity < 512 || (granularity & (granularity - 1)) !== 0) return 'Granularity must be power of 2 and at least 512';
  } else granularity = defaultGranularity(ctx.h.clusterSize);
  const refused = cannotStore(ctx, name, granularity);
  if (refused) return `Can't make bitmap '${name.toString()}' persistent in '${req.nodeName}': ${refused}`;
  if (ctx.live().some((l) => l.name.equals(name))) return `Bitmap already exists: ${name.toString()}`;
  const granularityBits = Math.log2(granularity);
  const bits = new DirtyBits(ctx.virtualSize, granularityBits, ctx.h.clusterSize);
  ctx.setLive([{ name, granularityBits, enabled: true, inconsistent: false, bits }, ...ctx.live()]);
  return undefined;
}

/** One action; returns qemu's message when it fails. */
export function bitmapAction(ctx: ActionContext, action: BitmapActionSpec, req: BitmapRequest): string | undefined {
  const name = Buffer.from(req.name, 'utf8');
  if (action.kind === 'add') return add(ctx, name, req);
  const target = ctx.live().find((l) => l.name.equals(name));
  if (!target) return notFound(name);
  switch (action.kind) {
    case 'remove':
      ctx.removeFromDisk(name);
      ctx.setLive(ctx.live().filter((l) => l !== target));
      return undefined;
    case 'clear': {
      const refused = unusable(target);
      if (refused) return refused;
      target.bits.clear();
      return undefined;
    }
    case 'enable':
    case 'disable': {
      const refused = unusable(target);
      if (refused) return refused;
      target.enabled = action.kind === 'enable';
      return undefined;
    }
    case 'merge':
      return merge(ctx, target, Buffer.from(action.source ?? '', 'utf8'), req);
  }
}

function merge(ctx: ActionContext, target: LiveBitmap, sourceName: Buffer, req: BitmapRequest): string | undefined {
  // Both bitmaps are looked up first; bdrv_merge_dirty_bitmap then checks the target, then the source.
  const pool: { name: Buffer; inconsistent: boolean; bits: DirtyBits }[] = req.source ?? ctx.live();
  const source = pool.find((b) => b.name.equals(sourceName));
  if (!source) return notFound(sourceName);
  const refused = unusable(target) ?? unusable(source);
  if (refused) return refused;
  if (source.bits.virtualSize !== target.bits.virtualSize) {
    return `Bitmaps are of different sizes (destination size is ${target.bits.virtualSize}, source size is ${source.bits.virtualSize}) and can't be merged`;
  }
  target.bits.mergeFrom(source.bits);
  return undefined;
}
