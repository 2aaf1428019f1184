// The virtual size of the backing image of the op's first input, when it has one: qemu's
// bdrv_co_truncate zeroes a grown area that the backing file would otherwise show (resize, and
// snapshot -a of a snapshot with a larger disk).
import { openTree, type OpenTreeOptions } from './open-tree.ts';
import type { OpContext } from './types.ts';

export function backingSize(ctx: OpContext, format: string | undefined, opts: OpenTreeOptions): number | undefined {
  const index = ctx.devices.findIndex((d) => d.spec.referrer === 0 && d.spec.role === 'backing');
  if (index < 0) return undefined;
  return openTree(ctx, index, { ...opts, format, fileName: undefined }).virtualSize;
}
