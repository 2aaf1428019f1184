// qemu-img measure's output: three lines of "%" PRIu64 in human form (the bitmaps line only
// when both formats carry bitmaps), or the QAPI BlockMeasureInfo as pretty JSON in QDict order.
import type { MeasureResult } from '../formats/types.ts';
import { toQemuJson } from './json.ts';

export function humanMeasure(r: MeasureResult): string {
  let text = `required size: ${r.required}\nfully allocated size: ${r.fullyAllocated}\n`;
  if (r.bitmaps !== undefined) text += `bitmaps size: ${r.bitmaps}\n`;
  return text;
}

export function jsonMeasure(r: MeasureResult): string {
  // BlockMeasureInfo's fields in schema order; qdictOrder decides how they print.
  return toQemuJson({ required: r.required, 'fully-allocated': r.fullyAllocated, bitmaps: r.bitmaps }) + '\n';
}
