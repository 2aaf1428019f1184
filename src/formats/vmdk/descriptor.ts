// The text descriptor: createType, extent lines, CIDs and the parent hint, found the way qemu's
// block/vmdk.c finds them (first strstr match, sscanf per line), so that the same descriptor
// yields the same disk, the same errors, and the same info.
import { ImageError } from '../types.ts';
import { Scanner, asText, cString, isSpace, scanHex32 } from './cstring.ts';
import { einval } from './errors.ts';

/** qemu reads at most this much of a descriptor file (1 MiB - 1, then a NUL). */
export const MAX_DESCRIPTOR_BYTES = 1024 * 1024 - 1;
/** CID, parentCID and parentFileNameHint are looked for only in the first 20 sectors. */
export const CID_AREA_BYTES = 20 * 512;
/** qemu has no limit; a descriptor naming more extents than this is refused as absurd. */
export const MAX_EXTENTS = 1024;
/** The host's PATH_MAX - 1 bound that qemu applies to the parent hint. */
const MAX_HINT_LENGTH = 4095;

const DESCRIPTOR_CREATE_TYPES = ['monolithicFlat', 'vmfs', 'vmfsSparse', 'seSparse', 'twoGbMaxExtentSparse', 'twoGbMaxExtentFlat'];

export type ExtentType = 'FLAT' | 'SPARSE' | 'VMFS' | 'VMFSSPARSE' | 'SESPARSE';

export interface ExtentLine {
  type: ExtentType;
  /** Size in sectors as written (only flat extents use it; sparse ones use their header). */
  sectors: bigint;
  /** The file name exactly as written (at most 511 bytes, as qemu's sscanf keeps). */
  name: string;
  /** For FLAT: the start in sectors inside the file; VMFS: 0. */
  flatOffset: bigint;
}

/** createType of a descriptor file; refuses the types qemu does not open from a descriptor. */
export function descriptorCreateType(desc: string): string {
  const at = desc.indexOf('createType');
  const start = at + 'createType'.length + 2; // skips `="`
  const end = at < 0 || start >= desc.length ? -1 : desc.indexOf('"', start);
  if (end < 0 || end - start + 1 > 128) throw new ImageError('invalid VMDK image descriptor');
  const type = desc.slice(start, end);
  if (!DESCRIPTOR_CREATE_TYPES.includes(type)) throw new ImageError(`Unsupported image type '${asText(type)}'`);
  return type;
}

/**
 * The extent lines qemu would open, in order, up to the first invalid line. Lines qemu skips
 * silently (not RW, unknown type, size <= 0) are skipped here too. `error` is the "Invalid extent
 * line" error qemu raises after opening the extents before it.
 */
export function parseExtentLines(desc: string): { extents: ExtentLine[]; error?: ImageError } {
  const extents: ExtentLine[] = [];
  // sscanf's leading blank skips newlines too, so every line of a white-space run scans the same
  // text: remember where the last run ended, or a megabyte of blank lines would cost n^2.
  let runStart = -1;
  let runEnd = -1;
  let cached = scanExtentLine(desc, 0);
  for (let p = 0; p < desc.length; p = nextLine(desc, p)) {
    if (!(p > runStart && p <= runEnd)) {
      runStart = p;
      runEnd = p;
      while (isSpace(desc[runEnd])) runEnd++;
      cached = scanExtentLine(desc, runEnd);
    }
    const m = cached;
    if (m.matches < 4 || m.access !== 'RW') continue;
    let flatOffset = m.flatOffset;
    let invalid = false;
    if (m.type === 'FLAT') invalid = m.matches !== 5 || flatOffset < 0n;
    else if (m.type === 'VMFS') {
      invalid = m.matches !== 4;
      flatOffset = 0n;
    } else invalid = m.matches !== 4;
    if (invalid) {
      let end = nextLine(desc, p);
      if (desc[end - 1] === '\n') end--;
      return { extents, error: new ImageError(`Invalid extent line: ${asText(desc.slice(p, end))}`) };
    }
    if (m.sectors <= 0n || !['FLAT', 'SPARSE', 'VMFS', 'VMFSSPARSE', 'SESPARSE'].includes(m.type)) continue;
    if (extents.length >= MAX_EXTENTS) throw new ImageError(`VMDK descriptor names more than ${MAX_EXTENTS} extents`);
    extents.push({ type: m.type as ExtentType, sectors: m.sectors, name: asText(m.name), flatOffset });
  }
  return { extents };
}

function nextLine(s: string, p: number): number {
  const nl = s.indexOf('\n', p);
  return nl < 0 ? s.length : nl + 1;
}

/** sscanf(p, "%10s %lld %10s \"%511[^\n\r\"]\" %lld") with its count of conversions. */
function scanExtentLine(s: string, p: number): { matches: number; access: string; sectors: bigint; type: string; name: string; flatOffset: bigint } {
  const r = { matches: 0, access: '', sectors: 0n, type: '', name: '', flatOffset: -1n };
  const sc = new Scanner(s, p);
  const access = sc.word(10);
  if (access === undefined) return r;
  r.access = access;
  r.matches = 1;
  const sectors = sc.int64();
  if (sectors === undefined) return r;
  r.sectors = sectors;
  r.matches = 2;
  const type = sc.word(10);
  if (type === undefined) return r;
  r.type = type;
  r.matches = 3;
  sc.skipSpace();
  if (!sc.literal('"')) return r;
  const name = sc.until('\n\r"', 511);
  if (name === undefined) return r;
  r.name = name;
  r.matches = 4;
  if (!sc.literal('"')) return r;
  const off = sc.int64();
  if (off === undefined) return r;
  r.flatOffset = off;
  r.matches = 5;
  return r;
}

/** The CID (or parentCID) from the first 20 sectors of the descriptor area; EINVAL when absent. */
export function readCid(area: Uint8Array, parent: boolean): number {
  const text = cString(area.subarray(0, CID_AREA_BYTES - 1));
  const key = parent ? 'parentCID' : 'CID';
  const at = text.indexOf(key);
  if (at < 0) throw einval();
  // qemu skips the key and one more character (normally '='), even past the string's end.
  const cid = scanHex32(text, at + key.length + 1);
  if (cid === undefined) throw einval();
  return cid;
}

/** parentFileNameHint="name" from the descriptor area, or undefined when there is none. */
export function parentHint(area: Uint8Array): string | undefined {
  const text = cString(area);
  const at = text.indexOf('parentFileNameHint');
  if (at < 0) return undefined;
  const start = at + 'parentFileNameHint'.length + 2;
  // strchr runs over the raw buffer from there, and stops at a NUL.
  let end = start;
  while (end < area.length && area[end] !== 0 && area[end] !== 0x22) end++;
  if (end >= area.length || area[end] !== 0x22) throw einval();
  if (end - start > MAX_HINT_LENGTH) throw einval();
  return Buffer.from(area.subarray(start, end)).toString('utf8');
}
