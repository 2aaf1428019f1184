import type { Op } from './types.ts';
import { infoOp } from './info.ts';
import { inspectOp } from './inspect.ts';
import { mapOp } from './map.ts';
import { convertOp } from './convert.ts';
import { compareOp } from './compare.ts';
import { answeringMissingFiles } from './open-tree.ts';

/** Every op a guest can run, by name. Test-only hostile ops are added by the sandbox tests' guest. */
export const ops: Record<string, Op> = {
  info: infoOp,
  inspect: inspectOp,
  map: answeringMissingFiles(mapOp),
  convert: answeringMissingFiles(convertOp),
  compare: answeringMissingFiles(compareOp),
};
