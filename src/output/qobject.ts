// The values qemu-img prints, as a tree of QObjects. Plain objects stand for QDicts; their key
// order is the insertion order (the QAPI schema order), which qdictOrder turns into qemu's
// printing order. `undefined` members are absent optional fields and are never printed.
import { qdictOrder } from './qdict-order.ts';
import { formatG } from './printf-g.ts';

export type QValue = string | number | bigint | boolean | null | QValue[] | QDictValue;
export interface QDictValue {
  [key: string]: QValue | undefined;
}

export function isQDict(v: QValue | undefined): v is QDictValue {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The present entries of a dict, in the order qemu iterates them. */
export function qdictEntries(dict: QDictValue): [string, QValue][] {
  const present = Object.keys(dict).filter((k) => dict[k] !== undefined);
  return qdictOrder(present).map((k) => [k, dict[k] as QValue]);
}

/** A number as qemu prints it: integers with "%" PRId64, doubles with "%.17g". */
export function formatNumber(n: number | bigint): string {
  if (typeof n === 'bigint') return n.toString();
  if (Number.isInteger(n)) return BigInt(n).toString();
  return formatG(n, 17);
}
