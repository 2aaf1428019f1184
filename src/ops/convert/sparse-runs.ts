// qemu-img convert's -S for a size that is no power of two (3k, 1536, 12k). qemu looks at a chunk
// 512-byte sector by sector: a run of data goes on across zero gaps shorter than -S, and a run's
// end is moved to a multiple of the alignment, the largest power of two in -S: a data run's end
// up (over whatever follows), a zero run's end down, and a zero run shorter than the way to the
// next boundary counts as data. A power of two makes that the same as -S-sized blocks aligned to
// the disk offset, which copy.ts's nonZeroParts uses.

const SECTOR = 512;
const ZERO_SECTOR = Buffer.alloc(SECTOR);

/** The largest power of two not above n (n >= 1). */
function pow2floor(n: number): number {
  let p = 1;
  while (p * 2 <= n) p *= 2;
  return p;
}

/**
 * The first run of `n` sectors from `first` (the disk's sector `sector`): whether it is data, and
 * its length in sectors, its end aligned as qemu aligns it.
 */
function firstRun(zero: (i: number) => boolean, first: number, n: number, sector: number, alignment: number): [boolean, number] {
  if (n <= 0) return [false, 0];
  let isZero = zero(first);
  let i = 1;
  while (i < n && zero(first + i) === isZero) i++;
  // A chunk all of one kind is taken whole.
  if (i === n) return [!isZero, i];
  const tail = (sector + i) % alignment;
  if (tail !== 0) {
    if (isZero && i <= tail) isZero = false;
    i = isZero ? i - tail : Math.min(i + alignment - tail, n);
  }
  return [!isZero, i];
}

/**
 * [start, end) byte ranges of `buf` (the chunk at disk offset `at`, a whole number of sectors
 * from a sector boundary) that qemu writes for -S `sparse` bytes: the rest it skips as zeros.
 */
export function qemuSparseParts(buf: Buffer, at: number, sparse: number): [number, number][] {
  const sectors = Math.ceil(buf.length / SECTOR);
  const minSectors = sparse / SECTOR;
  const alignment = pow2floor(minSectors);
  const zero = (i: number) => {
    const end = Math.min(buf.length, (i + 1) * SECTOR);
    return buf.compare(ZERO_SECTOR, 0, end - i * SECTOR, i * SECTOR, end) === 0;
  };
  const parts: [number, number][] = [];
  const first = at / SECTOR;
  for (let s = 0; s < sectors;) {
    const n = sectors - s;
    const min = Math.min(minSectors, n);
    const [data, firstLength] = firstRun(zero, s, n, first + s, alignment);
    let len = firstLength;
    if (data) {
      // Data goes on across zero gaps shorter than -S; it ends before the first longer one.
      let used = len;
      let checked = len;
      while (checked < n) {
        const [more, step] = firstRun(zero, s + checked, n - checked, first + s + checked, alignment);
        checked += step;
        if (more) used = checked;
        else if (step >= min) break;
      }
      len = used;
      const last = parts[parts.length - 1];
      const start = s * SECTOR;
      const end = Math.min(buf.length, (s + len) * SECTOR);
      if (last && last[1] === start) last[1] = end;
      else parts.push([start, end]);
    }
    s += len;
  }
  return parts;
}

export const isPowerOfTwo = (n: number): boolean => n > 0 && (n & (n - 1)) === 0;
