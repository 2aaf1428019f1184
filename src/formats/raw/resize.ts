// raw resize (qemu's file-posix truncate of a regular file): the file's length is the disk's.
// Preallocation writes the new area: 'full' as qemu does (zeros after the ftruncate), 'falloc'
// the same way, since a sandboxed guest has no fallocate: the same bytes, allocated as qemu's are.
import type { ResizeCapability, ResizePlan } from '../types.ts';

export const rawResize: ResizeCapability = {
  plan(_image, dev, request): ResizePlan {
    const { newSize, preallocation } = request;
    const current = dev.size;
    if (preallocation === 'metadata') return { error: 'Unsupported preallocation mode: metadata' };
    if (preallocation !== 'off' && current > newSize) return { error: 'Cannot use preallocation for shrinking files' };
    if (preallocation === 'off' || newSize <= current) return { steps: [{ kind: 'truncate', size: newSize }] };
    return { steps: [{ kind: 'truncate', size: newSize }, { kind: 'zero', pos: current, length: newSize - current }] };
  },
};
