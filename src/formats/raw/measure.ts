// qemu's raw_measure: a raw image is exactly as large as its disk, allocated or not.
import { ImageError, type MeasureCapability } from '../types.ts';

/** raw's create options and the file protocol's (qemu-img create -f raw -o help). */
export const RAW_CREATE_OPTIONS = { extent_size_hint: 'size', nocow: 'bool', preallocation: 'string', size: 'size' } as const;

const UINT64 = 2n ** 64n;

export const rawMeasure: MeasureCapability = {
  createOptions: () => RAW_CREATE_OPTIONS,
  measure(options, input) {
    let required: bigint;
    if (input) {
      if (input.sizeError !== undefined) throw new ImageError(`Unable to get image size: ${input.sizeError}`);
      required = input.virtualSize;
    } else {
      // ROUND_UP to a sector in uint64, as qemu computes it (a size near 2^64 wraps to 0).
      const size = BigInt(options.get('size') ?? '0');
      required = ((size + 511n) / 512n * 512n) % UINT64;
    }
    return { required, fullyAllocated: required };
  },
};
