// qemu prints a QDict in hash-table order, not insertion order (qobject/qdict.c): each key lands
// in bucket tdb_hash(key) % 512, buckets are walked in ascending order, and a bucket is a list
// with the most recently inserted key first. Reproducing that is the only way to print keys in
// the same order as qemu-img, for every struct, without per-struct tables.

/** Number of hash buckets of a QDict (QDICT_BUCKET_MAX). */
export const QDICT_BUCKETS = 512;

/** tdb_hash over the key's UTF-8 bytes, in 32-bit unsigned arithmetic like the C original. */
export function tdbHash(key: string): number {
  const bytes = Buffer.from(key, 'utf8');
  let value = Math.imul(0x238f13af, bytes.length) >>> 0;
  for (let i = 0; i < bytes.length; i++) {
    // A byte shifted by at most 23 bits stays below 2^31, so the shift cannot overflow.
    value = (value + (bytes[i] << ((i * 5) % 24))) >>> 0;
  }
  return (Math.imul(1103515243, value) + 12345) >>> 0;
}

export function qdictBucket(key: string): number {
  return tdbHash(key) % QDICT_BUCKETS;
}

/**
 * The order in which qemu iterates a QDict whose keys were inserted in `insertionOrder`
 * (for QAPI structs: the schema's field order). Re-inserting a key keeps its first position.
 */
export function qdictOrder(insertionOrder: readonly string[]): string[] {
  const seen = new Set<string>();
  const entries: { key: string; bucket: number; insertedAt: number }[] = [];
  insertionOrder.forEach((key, insertedAt) => {
    if (seen.has(key)) return;
    seen.add(key);
    entries.push({ key, bucket: qdictBucket(key), insertedAt });
  });
  entries.sort((a, b) => a.bucket - b.bucket || b.insertedAt - a.insertedAt);
  return entries.map((e) => e.key);
}
