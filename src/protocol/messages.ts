// Messages between the trusted host and the sandboxed guest (DESIGN.md §1). One JSON request
// goes to the guest on its stdin; the guest answers with newline-delimited JSON on fd 3.
// Both sides import these types; the host validates every message before using it.

export type DeviceRole = 'input' | 'backing' | 'data-file' | 'extent' | 'output';

export interface DeviceSpec {
  /** The fd number in the guest process. */
  fd: number;
  role: DeviceRole;
  writable: boolean;
  /** For role other than input/output: the name the image used for this file. */
  name?: string;
  /** Index (in the device table) of the image that named this file; absent for inputs. */
  referrer?: number;
  /**
   * Where the file has data, by the host's lseek(SEEK_DATA/SEEK_HOLE): sorted, disjoint [start,
   * end) runs, the rest holes. A hint for block status only; the guest checks it and drops a bad one.
   */
  dataRuns?: [number, number][];
  /**
   * Where the host stopped asking: the runs describe [0, dataRunsEnd) only, past it the guest
   * guesses as without an answer. Absent: the runs describe the whole file.
   */
  dataRunsEnd?: number;
  /**
   * Past dataRunsEnd: sorted, disjoint [start, end) spans covering all the data there (holes may
   * lie inside them); outside them the file is a hole. Absent: past dataRunsEnd nothing is known.
   */
  dataSpans?: [number, number][];
}

/**
 * Most data runs and spans one request carries (over all its devices): ~25 bytes of JSON each, so
 * the request stays within MAX_REQUEST_BYTES. A file with more gets its first runs, a dataRunsEnd
 * and coarse dataSpans over the rest.
 */
export const MAX_DATA_RUNS = 256 * 1024;

/** A file an op needs before it can go on: named by the image at device index `referrer`. */
export interface NeededFile {
  role: Exclude<DeviceRole, 'input' | 'output'>;
  name: string;
  referrer: number;
  /** The format the referring image gives for it (backing format), if any. */
  format?: string;
}

export interface GuestRequest {
  op: string;
  options: Record<string, unknown>;
  devices: DeviceSpec[];
}

/**
 * One `map` entry: [start, length, depth, flags (present 1, zero 2, data 4, compressed 8),
 * host offset or -1, device index of the file holding it or -1]. The host offset is qemu's int64:
 * a safe non-negative integer travels as a number, any other (≥ 2^53 or negative, which a VMDK
 * flat extent can give and qemu-img map prints as is) as a decimal string.
 */
export type MapEntry = [number, number, number, number, number | string, number];

/** A host offset sent as a string: an int64 in canonical decimal (no sign on 0, no leading 0). */
export const INT64_DECIMAL = /^(0|-?[1-9][0-9]{0,18})$/;

/** Most entries in one `map-entries` message. */
export const MAX_MAP_ENTRIES = 8192;

/**
 * A line for stderr besides the op's own error (qemu prints such lines and goes on, or before it
 * fails): `prefixed` lines follow "<progname>: " (qemu's error_report, and warn_report with its
 * "warning: "), others stand alone (a driver's own fprintf, e.g. qcow2's corruption notice).
 */
export interface GuestWarning {
  text: string;
  prefixed: boolean;
  /** Printed without a newline after it (qemu's error_printf of a text that has none). */
  unterminated?: boolean;
  /**
   * The device index of the image whose open printed it: qemu prints an open's warnings once per
   * image it opens, so the same text from two images is printed twice, from one image once.
   */
  source?: number;
}

/** Most warnings one result or error carries, and the longest text of one (guest data: bounded). */
export const MAX_WARNINGS = 16;
export const MAX_WARNING_TEXT = 1024;

export type GuestMessage =
  | { type: 'progress'; done: number; total: number }
  | { type: 'result'; value: unknown; warnings?: GuestWarning[] }
  | { type: 'error'; message: string; warnings?: GuestWarning[] }
  | { type: 'need-files'; files: { role: DeviceRole; name: string; format?: string }[] }
  | { type: 'map-entries'; entries: MapEntry[] }
  /**
   * convert --salvage: sectors of a source that could not be read (`read`, copied as zeros) or
   * whose block status failed (`block-status`), [offset, offset + length) in that source; the
   * host prints qemu's warning for each 512-byte sector. At most MAX_UNREADABLE_BYTES at once.
   * `notice`: a line the driver printed on the way (qcow2's "Image is corrupt"), printed first.
   */
  | { type: 'unreadable'; kind: 'read' | 'block-status'; offset: number; length: number; reason: string; notice?: string }
  /**
   * What the op freed in writable device `device` and qemu would discard (qcow2 clusters no
   * longer referenced): sorted, disjoint, 512-aligned [offset, length, unit] ranges (unit: the
   * size of qemu's separate requests in it, 0 for one; io/discard-set.ts), at most
   * MAX_DISCARD_RANGES, sent once per device after the op's last write and before its result.
   * The host punches holes there once the op succeeded (host/freed-ranges.ts).
   */
  | { type: 'freed'; device: number; ranges: [number, number, number][] };

/** The longest range one `unreadable` message names: qemu's largest read (2 MiB), 4096 lines. */
export const MAX_UNREADABLE_BYTES = 2 * 1024 * 1024;

/** The longest message line the host accepts from a guest. */
export const MAX_MESSAGE_BYTES = 16 * 1024 * 1024;

/** The largest request the guest accepts on its stdin. */
export const MAX_REQUEST_BYTES = 16 * 1024 * 1024;
