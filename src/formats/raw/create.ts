// `create -f raw` as qemu's file protocol does it (file-posix raw_co_create): the file is the
// disk, its length the size rounded up to a sector. preallocation=full writes every byte; falloc
// reserves them (fallocate: unwritten extents, which read as zeros and which SEEK_DATA, and so
// qemu's map, shows as holes), done by the trusted host, since the guest cannot make the call;
// off leaves a hole. Except with full, qemu then writes zeros over the first block (its
// allocate_first_block), which map shows as data.
import { firstBlockBytes } from './first-block.ts';
import { ImageError, type CreateCapability, type CreateOptionSpec, type CreatePlan } from '../types.ts';

const SIZE_OPTION: CreateOptionSpec = { name: 'size', type: 'size', help: 'Virtual disk size' };

/** The raw format's own create options (`create -f raw -o help` without a file name). */
export const RAW_FORMAT_CREATE_OPTIONS: readonly CreateOptionSpec[] = [SIZE_OPTION];

/** The file protocol's create options, in qemu's order; every format's list ends with them. */
export const FILE_PROTOCOL_CREATE_OPTIONS: readonly CreateOptionSpec[] = [
  SIZE_OPTION,
  { name: 'nocow', type: 'bool', help: 'Turn off copy-on-write (valid only on btrfs)' },
  { name: 'preallocation', type: 'string', help: 'Preallocation mode (allowed values: off, falloc, full)' },
  { name: 'extent_size_hint', type: 'size', help: 'Extent size hint for the image file, 0 to disable' },
];

const UINT64 = 2n ** 64n;
const INT64 = 2n ** 63n;

/** qemu's PreallocMode names; only some of them are valid for a given driver. */
export const PREALLOC_MODES = ['off', 'metadata', 'falloc', 'full'];

function plan(options: ReadonlyMap<string, string>, size: bigint): CreatePlan {
  const prealloc = options.get('preallocation') ?? 'off';
  if (!PREALLOC_MODES.includes(prealloc)) throw new ImageError(`invalid parameter value: ${prealloc}`);
  if (prealloc === 'metadata') throw new ImageError('Unsupported preallocation mode: metadata');
  // ROUND_UP in uint64 (a size just below 2^64 wraps to 0), then the int64 ftruncate takes.
  const length = BigInt.asIntN(64, (((size + 511n) / 512n) * 512n) % UINT64);
  if (length < 0n) throw new ImageError('Could not resize file: Invalid argument');
  // Past what a file can be (ext4: 16 TiB), ftruncate fails with EFBIG; Node takes no more than 2^53.
  if (length >= INT64 || !Number.isSafeInteger(Number(length))) throw new ImageError('File too large', 'EFBIG');
  return { length: Number(length), allocate: prealloc === 'full', fallocate: prealloc === 'falloc' };
}

export const rawCreate: CreateCapability = {
  options: RAW_FORMAT_CREATE_OPTIONS,
  plan,
  layout: (p) => {
    const length = p.length as number;
    const first = p.allocate === true ? 0 : firstBlockBytes(length);
    return { image: { length, writes: first > 0 ? [{ pos: 0, bytes: new Uint8Array(first) }] : [], allocate: p.allocate === true } };
  },
};
