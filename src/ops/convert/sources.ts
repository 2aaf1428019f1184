// Opening convert's sources inside the guest: each source tree (backing chain, data file,
// extents) through openTree, and -l's internal snapshot view, with qemu's wording.
import { ImageError, type Image } from '../../formats/types.ts';
import { openTree, type OpenTreeOptions } from '../open-tree.ts';
import type { OpContext } from '../types.ts';
import { leftoverOption } from '../../formats/names.ts';

export interface ConvertSource {
  /** Index of the source's device in the device table. */
  index: number;
  /** -f for every source; detection otherwise. */
  format?: string;
  /** The name as the user gave it. */
  fileName: string;
  /** An --image-opts option no format has here: qemu's open fails once it knows the format. */
  unknownOption?: string;
  /** key-secret or encrypt.key-secret given without driver= (open-tree.ts keyOptions). */
  keyOption?: string;
}

/** -l: `snapshot.id=…,snapshot.name=…` (both must match) or a plain id-or-name. */
export interface SnapshotChoice {
  id?: string;
  name?: string;
  idOrName?: string;
}

interface SnapshotCapable {
  loadSnapshot(id: string | undefined, name: string | undefined): Image;
}

const canLoadSnapshot = (image: Image): image is Image & SnapshotCapable =>
  typeof (image as Partial<SnapshotCapable>).loadSnapshot === 'function';

const notFound = (e: unknown) => e instanceof ImageError && e.errno === 'ENOENT';

/** qemu's bdrv_snapshot_load_tmp(_by_id_or_name): the id first, then the name. */
function loadSnapshot(image: Image, choice: SnapshotChoice): Image {
  if (!canLoadSnapshot(image)) {
    throw new ImageError(`Block format '${image.format}' used by device '' does not support temporarily loading internal snapshots`);
  }
  if (choice.idOrName === undefined) return image.loadSnapshot(choice.id, choice.name);
  try {
    return image.loadSnapshot(choice.idOrName, undefined);
  } catch (e) {
    if (!notFound(e)) throw e;
    return image.loadSnapshot(undefined, choice.idOrName);
  }
}

/** One source opened with everything below it (MissingFilesError: the host grants more files). */
export function openSource(ctx: OpContext, source: ConvertSource, opts: Pick<OpenTreeOptions, 'unsafeQuirks' | 'profile' | 'secrets'>): Image {
  const keyOptions = source.keyOption === undefined ? undefined : { [source.index]: source.keyOption };
  const image = openTree(ctx, source.index, { format: source.format, fileName: source.fileName, unsafeQuirks: opts.unsafeQuirks, profile: opts.profile, secrets: opts.secrets ?? {}, keyOptions });
  // qemu's open fails on an option left over once the (probed) format has taken its own.
  const foreign = leftoverOption(image.format, source.unknownOption, source.keyOption);
  if (foreign !== undefined) throw new ImageError(`Block format '${image.format}' does not support the option '${foreign}'`);
  return image;
}

/** -l: every source read through the snapshot; failures worded as qemu-img words them. */
export function snapshotViews(images: Image[], choice: SnapshotChoice): Image[] {
  try {
    // qemu loads the snapshot into the first source only (-l snapshot.*= with several sources).
    return images.map((image, i) => (i === 0 ? loadSnapshot(image, choice) : image));
  } catch (e) {
    if (e instanceof ImageError) throw new ImageError(`Failed to load snapshot: ${e.message}`, e.errno);
    throw e;
  }
}

import { MAX_BLOCK_STATUS as MAX_EXTENT } from './copy.ts';

/**
 * qemu's pass over every source's block status, which precedes any write of the copy: where the
 * first one fails, as [source, offset in it, reason]; undefined when none does. For -n, whose
 * target qemu then leaves untouched (the copy here would have punched or written it first).
 */
export function firstBlockStatusFailure(views: Image[]): { source: number; offset: number; reason: string; error: ImageError } | undefined {
  for (let source = 0; source < views.length; source++) {
    const image = views[source];
    for (let pos = 0; pos < image.virtualSize; ) {
      try {
        const length = image.extent(pos, Math.min(image.virtualSize - pos, MAX_EXTENT)).length;
        // No progress: the copy reports that broken image itself.
        if (!(length > 0)) return undefined;
        pos += length;
      } catch (e) {
        if (e instanceof ImageError) return { source, offset: pos, reason: e.message, error: e };
        throw e;
      }
    }
  }
  return undefined;
}

/**
 * Whether qemu's int64 sum of the sources' sector counts comes out negative (sources whose counts
 * pass INT64_MAX / 512 can overflow it together). qemu's copy loop then never runs: no block
 * status is asked, nothing is read or written, and the command succeeds, its target made with
 * the wrapped size (or, with -n, untouched: no target is smaller than a negative total).
 */
export function sectorTotalIsNegative(views: Image[]): boolean {
  let total = 0n;
  for (const v of views) {
    const count = v.sizeFailure?.sectorCount ?? BigInt(Math.ceil(v.virtualSize / 512));
    total = BigInt.asIntN(64, total + count);
  }
  return total < 0n;
}
