import type { Op } from './types.ts';
import { infoOp } from './info.ts';
import { inspectOp } from './inspect.ts';
import { mapOp } from './map.ts';
import { convertOp } from './convert.ts';
import { convertImageOp } from './convert/to-image.ts';
import { convertIntoOp } from './convert/to-image-into.ts';
import { convertBitmapsCheckOp } from './convert/to-image-bitmaps.ts';
import { compareOp } from './compare.ts';
import { checkOp } from './check.ts';
import { measureOp } from './measure.ts';
import { createBackingOp, createOp } from './create.ts';
import { resizeOp } from './resize.ts';
import { rebaseOp } from './rebase.ts';
import { commitOp } from './commit.ts';
import { amendOp } from './amend.ts';
import { snapshotChangeOp, snapshotListOp } from './snapshot.ts';
import { ddOp } from './dd.ts';
import { benchOp } from './bench.ts';
import { bitmapOp } from './bitmap.ts';
import { answeringMissingFiles } from './open-tree.ts';
import { answeringDirty, repairDirtyOp } from './dirty-repair.ts';
import { withArgon2 } from '../formats/crypto/argon2.ts';

/** Every op a guest can run, by name. Test-only hostile ops are added by the sandbox tests' guest. */
export const ops: Record<string, Op> = {
  info: infoOp,
  inspect: inspectOp,
  // withArgon2: LUKS2 Argon2 key slots are derived asynchronously, then the op runs again.
  map: withArgon2(answeringMissingFiles(mapOp)),
  convert: withArgon2(answeringMissingFiles(convertOp)),
  'convert-image': withArgon2(answeringMissingFiles(convertImageOp)),
  'convert-into': withArgon2(answeringMissingFiles(convertIntoOp)),
  'convert-bitmaps-check': withArgon2(answeringMissingFiles(convertBitmapsCheckOp)),
  compare: withArgon2(answeringMissingFiles(compareOp)),
  check: withArgon2(answeringMissingFiles(checkOp)),
  measure: withArgon2(answeringMissingFiles(measureOp)),
  'snapshot-list': withArgon2(answeringMissingFiles(snapshotListOp)),
  snapshot: withArgon2(answeringMissingFiles(answeringDirty(snapshotChangeOp))),
  'create-backing': answeringMissingFiles(createBackingOp),
  create: createOp,
  resize: withArgon2(answeringMissingFiles(answeringDirty(resizeOp))),
  rebase: withArgon2(answeringMissingFiles(answeringDirty(rebaseOp))),
  commit: withArgon2(answeringMissingFiles(answeringDirty(commitOp))),
  amend: withArgon2(answeringMissingFiles(answeringDirty(amendOp))),
  // A dirty qcow2's repair at a writable open (dirty-repair.ts), before the op runs again.
  'repair-dirty': repairDirtyOp,
  dd: withArgon2(answeringMissingFiles(ddOp)),
  bench: withArgon2(answeringMissingFiles(answeringDirty(benchOp))),
  bitmap: withArgon2(answeringMissingFiles(answeringDirty(bitmapOp))),
};
