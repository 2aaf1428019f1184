/** Seeded xorshift32: the same seed gives the same bytes, so a test image or bench corpus can be rebuilt exactly. */
export function prng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return x >>> 0;
  };
}
