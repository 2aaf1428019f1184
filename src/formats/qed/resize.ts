// qed resize (qemu's bdrv_qed_co_truncate): growing only, and only the header's image size
// changes (qemu rewrites the header as it read it, so the size field is the only new bytes).
// Images whose writable open qemu would change first (a check pending, unknown autoclear bits)
// are refused in instar's words, nothing written.
import { readAt } from '../bytes.ts';
import { F_NEED_CHECK, readQedHeader } from './header.ts';
import type { ResizeCapability, ResizePlan } from '../types.ts';

const U64_MASK = (1n << 64n) - 1n;
/** Offsets of the header's autoclear features and image size (little-endian u64s). */
const AUTOCLEAR_AT = 32;
const IMAGE_SIZE_AT = 48;

export const qedResize: ResizeCapability = {
  plan(_image, dev, request): ResizePlan {
    const h = readQedHeader(dev);
    if (request.preallocation !== 'off') return { error: `Unsupported preallocation mode '${request.preallocation}'` };
    const size = BigInt(request.newSize);
    // qemu's qed_is_image_size_valid: whole sectors, within what the tables can map (64-bit math).
    const cs = BigInt(h.clusterSize);
    const entries = (BigInt(h.tableSize) * cs) / 8n;
    const max = (entries * cs * entries) & U64_MASK;
    if (size % 512n !== 0n || size > max) return { error: 'Invalid image size specified' };
    if (size < h.imageSize) return { error: 'Shrinking images is currently not supported' };
    const refused = (why: string): ResizePlan => ({ error: `instar cannot resize this qed image (${why}); nothing was written` });
    if (h.features & F_NEED_CHECK) return refused('it needs a check, which qemu would run and record first');
    if (readAt(dev, AUTOCLEAR_AT, 8).readBigUInt64LE() !== 0n) return refused('qemu would clear its autoclear bits first');
    const field = Buffer.alloc(8);
    field.writeBigUInt64LE(size);
    return { steps: [{ kind: 'write', pos: IMAGE_SIZE_AT, bytes: field }, { kind: 'barrier' }] };
  },
};
