// The contract between format code and everything else. Format code is pure: it sees a
// BlockDevice, never a path or a process, and reports failure only by throwing ImageError.
import type { RepairStep } from './repair.ts';

/** A random-access view of one file descriptor (or of an in-memory buffer in tests). */
export interface BlockDevice {
  /** Length of the underlying file in bytes. */
  readonly size: number;
  /** Bytes the file system allocated for the file (st_blocks * 512), where known: map tells holes by it. */
  readonly allocated?: number;
  /**
   * Where the file has data, as the host's lseek(SEEK_DATA/SEEK_HOLE) found it: sorted, disjoint
   * [start, end) byte runs; everything else is a hole. A hint (checked, bounded), absent when unknown.
   */
  readonly dataRuns?: readonly (readonly [number, number])[];
  /** Where dataRuns stop describing the file; absent: they describe all of it. */
  readonly dataRunsEnd?: number;
  /** Past dataRunsEnd: spans covering all the data there (holes may lie inside); holes outside. */
  readonly dataSpans?: readonly (readonly [number, number])[];
  /** Reads up to buf.length bytes at pos; returns how many were read (short only at EOF). */
  read(buf: Uint8Array, pos: number): number;
  /** Present only on devices the host opened writable. */
  write?(buf: Uint8Array, pos: number): void;
  /** Sets the file's length (writable devices only; resize's 'truncate' step). */
  truncate?(size: number): void;
}

/** The only error format code may throw. `message` is qemu's wording after "Could not open 'X': ". */
export class ImageError extends Error {
  constructor(message: string, readonly errno?: string) {
    super(message);
    this.name = 'ImageError';
  }
}

/**
 * A new image that create made but that its own driver then refuses to open (qemu's create
 * writes it, its open fails): qemu-img convert says "Could not open '<target>': ..." and the
 * files stay as created.
 */
export class NewImageOpenError extends ImageError {}

/** QAPI ImageInfoSpecific: {type, data}; `data` keys are in QAPI schema order. */
export interface FormatSpecific {
  type: string;
  data: Record<string, unknown>;
}

/** QAPI SnapshotInfo, keys in schema order. */
export interface SnapshotInfo {
  id: string;
  name: string;
  'vm-state-size': number;
  'date-sec': number;
  'date-nsec': number;
  'vm-clock-sec': number;
  'vm-clock-nsec': number;
  icount?: number;
}

/**
 * What a driver knows about one opened image: the QAPI ImageInfo fields that come from the
 * image's bytes. Fields that come from the file system (filename, actual-size,
 * full-backing-filename, children) are filled in by the trusted host.
 */
export interface NodeInfo {
  format: string;
  'dirty-flag'?: boolean;
  'virtual-size': number;
  'cluster-size'?: number;
  encrypted?: boolean;
  compressed?: boolean;
  'backing-filename'?: string;
  'backing-filename-format'?: string;
  snapshots?: SnapshotInfo[];
  'format-specific'?: FormatSpecific;
  /** Files the image names that qemu opens together with it (not the backing file). */
  'data-file'?: string;
}

export type ExtentKind = 'data' | 'zero' | 'unallocated';

/** One run of guest-visible bytes with a uniform allocation status. */
export interface Extent {
  offset: number;
  length: number;
  kind: ExtentKind;
  compressed?: boolean;
  /** How many backing levels down the data lives (0 = this image). */
  depth: number;
  /** Offset in the file that holds the data, where it is stored uncompressed. */
  hostOffset?: number;
  /** The exact host offset when it is not a safe integer (a VMDK flat extent may start anywhere
   *  in int64, and qemu-img map prints it as is); hostOffset then holds the nearest double. */
  hostOffsetExact?: bigint;
  /** The file hostOffset is in, when not the image's own (qcow2 data file, VMDK extent file). */
  file?: BlockDevice;
  /** Data that a hole in its file makes read as zeros (qemu's DATA|ZERO, e.g. a sparse flat VMDK). */
  zeroData?: boolean;
}

/** An opened virtual disk. */
export interface Image {
  readonly format: string;
  readonly virtualSize: number;
  info(): NodeInfo;
  /** Guest-visible bytes; holes read from the backing image or as zeros. */
  read(buf: Uint8Array, offset: number): void;
  /** The allocation status at `offset`, covering at most `length` bytes. */
  extent(offset: number, length: number): Extent;
  /**
   * This image's own status, its backing file not asked (qemu's bdrv_is_allocated of this node):
   * a run ends where the driver's answer does, e.g. where a qcow2 hole in an allocated cluster
   * meets one in an unallocated cluster. Absent: extent() is the best answer there is.
   */
  ownExtent?(offset: number, length: number): Extent;
  /**
   * How many bytes from `offset` (at most `length`) read() would certainly fill with zeros without
   * the file's bytes: blocks with no data, or a hole in the file by the host's data runs. 0 when
   * unknown. extent() may still call them data (qemu reads them); a copy only skips reading them.
   */
  zeroRun?(offset: number, length: number): number;
  /** Formats with backing files: the opened backing image (the host resolved and opened it). */
  attachBacking?(backing: Image): void;
  /** The image attachBacking gave, where the format tells it (qcow2). */
  readonly backingImage?: Image;
  /**
   * How qemu's driver answers block status where that differs from extent() (compare's walk and
   * -s depend on it): 'none' = the driver has no block status (qemu's generic layer calls every
   * byte data, unmapped); a number = its answers end at multiples of that many bytes (a qcow2 L2
   * table's span, a VMDK grain). Absent: as extent() says.
   */
  readonly blockStatus?: 'none' | number;
  /** What qemu's driver says with warn_report while opening (text after "warning: "): printed, not fatal. */
  readonly warnings?: readonly string[];
  /** What the driver prints after its warnings with error_printf: a line of its own, no newline after it. */
  readonly warningsTail?: string;
  /**
   * The image opened, but qemu's size queries fail (a sector count past int64 bytes:
   * formats/sector-count.ts): each command words that itself; extent() and read() throw.
   */
  readonly sizeFailure?: SizeQueryFailure;
  /**
   * qemu's driver takes a block-status length as a C int count of sectors (parallels): a request
   * for 2^31 sectors or more truncates, which compare's whole-rest requests meet on disks of 1 TiB.
   */
  readonly blockStatusIntSectors?: boolean;
  /**
   * The persistent dirty bitmaps qemu loads with the image (name, granularity), for formats that
   * can carry them; absent when the format (or this image's version of it) cannot.
   */
  readonly persistentBitmaps?: readonly { name: string; granularity: number }[];
  /** The qemu release whose driver first says it can carry persistent bitmaps, when that is later than 7.2. */
  readonly persistentBitmapsSince?: { major: number; minor: number };
}

/** How qemu's size queries of an opened image fail. */
export interface SizeQueryFailure {
  /** The C int errno bdrv_getlength fails with (strerror of any int: it need not be a real errno). */
  errno: number;
  /** bdrv_nb_sectors fails too (a negative count), with the same errno. */
  sectors: boolean;
  /** When bdrv_nb_sectors succeeds: the sector count it gives (convert sums them in int64). */
  sectorCount?: bigint;
}

export interface OpenContext {
  /** Open for writing (mutating commands); read-only otherwise. */
  writable: boolean;
  /** Devices for the files the image names, as granted by the host (by role and name). */
  devices?: ReadonlyMap<string, BlockDevice>;
  /** Version-dependent reading rules (from src/output/profile.ts); newest behaviour when absent. */
  profile?: { vhdCurrentSize: boolean };
  /** The image's name as the user gave it, for messages that quote it (qemu's bs->filename). */
  displayName?: string;
  /** The secret (passphrase) for an encrypted image, from the host's --object secret. */
  key?: Uint8Array;
  /** The op will read data: an encrypted image without `key` fails at open, as in qemu. */
  keyRequired?: boolean;
  /** --unsafe-quirks: behave as qemu-img where instar deliberately differs (e.g. LUKS2 refused). */
  unsafeQuirks?: boolean;
  /** qemu-img check's open (BDRV_O_CHECK): skip what the format's checker reports instead. */
  check?: boolean;
  /**
   * The op reads the disk: every command but info, which qemu opens with BDRV_O_NO_IO. What qemu
   * checks only then fails at open (qcow2's data-file rules), not at the first read.
   */
  readsData?: boolean;
}

/** A format's driver: its probe, its opener and the capabilities it has (DESIGN.md §2). */
export interface Driver {
  readonly name: string;
  /** 0 = not this format, up to 100 = certain (qemu's probe scores). */
  probe(head: Uint8Array, fileName?: string): number;
  open(dev: BlockDevice, ctx: OpenContext): Image;
  /** `measure -O <this format>`: how large a new image would be (qemu's bdrv_measure). */
  readonly measure?: MeasureCapability;
  /** `create -f <this format>`: a new image's layout (qemu's bdrv_create). */
  readonly create?: CreateCapability;
  /** `convert -O`, `dd -O`: guest data written into an image `create` has just laid out. */
  readonly writer?: WriterCapability;
  /** `resize`: the writes that change the image's virtual size (qemu's bdrv_co_truncate). */
  readonly resize?: ResizeCapability;
  /** `rebase -u` (qemu's bdrv_change_backing_file): the writes that name a new backing file. */
  readonly changeBacking?: ChangeBackingCapability;
  /**
   * Safe `rebase` of any top but qcow2 (qemu-img's copy loop writing through the driver): the
   * writes that carry out its requests where the top allocates nothing, or instar's refusal.
   */
  readonly rebaseCopy?: (dev: BlockDevice, requests: readonly import('./qed/rebase-copy.ts').CopyRequest[],
    oldContent: (buf: Uint8Array, offset: number) => void) => import('./repair.ts').RepairStep[] | { refused: string };
  /** `amend -o` (qemu's bdrv_amend_options): the options it takes and the writes that apply them. */
  readonly amend?: AmendCapability;
  /** `snapshot -c/-d/-a` (qemu's bdrv_snapshot_create/delete/goto): the writes that change internal snapshots. */
  readonly snapshots?: SnapshotCapability;
  /** `bitmap` (qemu-img bitmap): the writes that change persistent dirty bitmaps. */
  readonly dirtyBitmaps?: BitmapCapability;
}

/** What `bitmap` asks of a format with persistent dirty bitmaps (qcow2: formats/qcow2/bitmap-*.ts). */
export interface BitmapCapability {
  /** The bitmaps of an image opened read-only (a --merge source named with -b). */
  sources(dev: BlockDevice): import('./qcow2/bitmap-actions.ts').SourceBitmap[];
  /**
   * Every bitmap of an image as qemu loads it at open (convert --bitmaps); undefined when the image
   * cannot hold persistent bitmaps (qemu's bdrv_supports_persistent_dirty_bitmap is false).
   */
  persistent?(dev: BlockDevice): import('./qcow2/bitmap-state.ts').LiveBitmap[] | undefined;
  /** The writes of the actions (and of qemu's open and close around them), or instar's refusal. */
  change(dev: BlockDevice, request: import('./qcow2/bitmap-actions.ts').BitmapRequest): { steps: import('./repair.ts').RepairStep[]; error?: string } | { refused: string };
}

/**
 * A plan of writes that changes an image's internal snapshots, or how qemu's driver fails (errno
 * and strerror text), or no snapshot by that name (delete), or instar's refusal (nothing written).
 */
export type SnapshotChangePlan =
  | { steps: import('./repair.ts').RepairStep[] }
  /** `steps`: what qemu's driver wrote before it failed (instar writes the same). */
  /** `report`: the line qemu's driver printed before failing (error_report), printed first. */
  | { errno: string; message: string; steps?: import('./repair.ts').RepairStep[]; report?: string }
  /** `steps`: what qemu's writable open and close wrote around the search (bitmaps stored again). */
  | { notFound: true; steps?: import('./repair.ts').RepairStep[] }
  | { refused: string };

/** What `snapshot` asks of a format with internal snapshots. */
export interface SnapshotCapability {
  /** A new snapshot of the active disk named `name`, stamped with `now`. */
  create(dev: BlockDevice, name: string, now: { sec: number; nsec: number }): SnapshotChangePlan;
  /** Deletes the snapshot qemu-img finds by `name`. */
  delete(dev: BlockDevice, name: string): SnapshotChangePlan;
  /**
   * Reverts the active disk to the snapshot with that id or name; `backingSize`: the backing
   * image's virtual size, when there is one (qemu zeroes a grown area that would show it).
   */
  apply(dev: BlockDevice, idOrName: string, backingSize?: number): SnapshotChangePlan;
}

/** What `resize` asks of a driver: the new virtual size (checked positive and below qemu's limit). */
export interface ResizeRequest {
  newSize: number;
  preallocation: 'off' | 'metadata' | 'falloc' | 'full';
  /** The backing image's virtual size, when the image has one (qemu zeroes what it would show). */
  backingSize?: number;
  /** Reads the guest disk before the change (qemu's writes copy some of it: qcow2's partial last cluster). */
  readGuest?: (buf: Uint8Array, offset: number) => void;
  /** The image's external data file, when the host granted it for writing (qcow2's data_file). */
  dataFile?: BlockDevice;
}

/** Steps for formats/repair.ts's executor, or qemu's message for a resize its driver refuses. */
/** `written`: qemu failed after its writable open, which (with its close) writes these anyway. */
/** `dataFileLength`: the external data file's new length (qemu truncates it to the new disk size). */
export type ResizePlan = { steps: RepairStep[]; dataFileLength?: number } | { error: string; written?: RepairStep[] };

/**
 * A format's `resize` capability: a pure planner from the opened image and its file to the writes
 * (and file length changes) qemu's driver would make, in qemu's order.
 */
export interface ResizeCapability {
  plan(image: Image, dev: BlockDevice, request: ResizeRequest): ResizePlan;
  /** What qemu's writable open and close alone write (qemu-img's own checks failed in between). */
  openClose?(dev: BlockDevice): RepairStep[];
}

/** qemu's QemuOptType: how a create option's value is checked (bool on/off, number, byte size). */
export type CreateOptionType = 'string' | 'bool' | 'number' | 'size';

/** What `measure` learnt from its input image (qemu's in_bs); absent with --size. */
export interface MeasureInput {
  /** bdrv_getlength of the input. */
  virtualSize: bigint;
  /** bdrv_getlength fails (formats/sector-count.ts): its strerror text; virtualSize means nothing then. */
  sizeError?: string;
  /**
   * Bytes of output clusters that would hold data, per output cluster size (a power of two from
   * 512 to 2 MiB): clusters any byte of which block status calls allocated data (not zero). Only
   * a measure that walks the disk asks (what the walk printed appears then); throws ImageError
   * with qemu's "Unable to get block status: …" when the walk failed.
   */
  dataBytes(clusterSize: number): bigint;
  /** The input's persistent dirty bitmaps; absent when its format cannot carry them. */
  bitmaps?: readonly { nameBytes: number; granularity: number }[];
}

/** qemu's BlockMeasureInfo (uint64 fields). */
export interface MeasureResult {
  required: bigint;
  fullyAllocated: bigint;
  bitmaps?: bigint;
}

/**
 * A format's `measure` capability (qemu's bdrv_measure): the create options its driver takes
 * (with the file protocol's), and the size a new image of the format would need. Pure: it gets
 * the options already type-checked, the last value of each, normalized (sizes and numbers as
 * decimal uint64, bools 'on'/'off'), and throws ImageError with qemu's text.
 */
export interface MeasureCapability {
  /** The create options of the driver in that qemu release. */
  createOptions(env: MeasureEnvironment): Readonly<Record<string, CreateOptionType>>;
  measure(options: ReadonlyMap<string, string>, input: MeasureInput | undefined, env: MeasureEnvironment): MeasureResult;
}

/** What a measure needs beyond its options: the emulated qemu release and the --object secrets' ids. */
export interface MeasureEnvironment {
  qemu: { major: number; minor: number };
  secretIds: ReadonlySet<string>;
}

/** One create option as qemu's QemuOptDesc has it; `defaultValue` is what "Formatting ..." prints when unset. */
export interface CreateOptionSpec {
  readonly name: string;
  readonly type: CreateOptionType;
  readonly help: string;
  readonly defaultValue?: string;
}

/** A checked create request, as plain JSON (it travels from the host to the guest). */
export type CreatePlan = {
  readonly [key: string]: string | number | boolean | undefined | readonly string[];
  /** More files the image consists of (VMDK extents), named as qemu names them: the host creates them. */
  readonly extentFiles?: readonly string[];
};

/** What a create puts in one file: its final length and bytes at offsets (the rest reads as zeros). */
export interface CreateFileLayout {
  length: number;
  writes: { pos: number; bytes: Uint8Array }[];
  /** Every byte of the file is written (preallocation=full/falloc), not left as a hole. */
  allocate?: boolean;
  /** With `allocate`: only these [start, end) ranges are (the rest is written by `writes` or left a hole). */
  allocateRanges?: [number, number][];
  /**
   * preallocation=falloc: [start, end) reserved by the host with fallocate (unwritten extents, as
   * qemu's), which the guest cannot; where the host does not, it is written with zeros instead.
   */
  reserve?: [number, number];
}

/**
 * `create -f <this format>` (qemu's bdrv_create for the format). Pure: `plan` checks the options
 * (the last value of each, normalized as for measure) in qemu's order and throws ImageError with
 * qemu's text (errno 'EFBIG' where qemu fails with "too large"); `layout` gives the bytes.
 */
export interface CreateCapability {
  /** The driver's own create options in qemu's order (the file protocol's come after them). */
  readonly options: readonly CreateOptionSpec[];
  plan(options: ReadonlyMap<string, string>, size: bigint, env?: CreateEnvironment): CreatePlan;
  /** `extents` in the order of the plan's extentFiles. */
  layout(plan: CreatePlan): { image: CreateFileLayout; dataFile?: CreateFileLayout; extents?: CreateFileLayout[] };
}

/** The files a new image consists of, as `CreateCapability.layout` named them, opened for writing. */
export interface WriterFiles {
  image: BlockDevice;
  dataFile?: BlockDevice;
  /** In the order of the plan's extentFiles. */
  extents: BlockDevice[];
}

/**
 * Writes guest data into an image whose layout `create` has just written (DESIGN.md §2: convert,
 * dd and commit are built on readers and writers). The caller writes in ascending virtual order,
 * as qemu-img convert does without -W, so a writer that allocates in arrival order reproduces
 * qemu's layout; it skips what reads as zeros already (the fresh image, without a backing file).
 */
export interface ImageWriter {
  /** The unit the caller writes in: offsets and lengths are multiples of it, except at the disk's end. */
  readonly clusterSize: number;
  /** Guest bytes at a virtual offset. */
  write(data: Uint8Array, offset: number): void;
  /** -c: the same, compressed; absent when the format cannot compress (the host refuses -c first). */
  writeCompressed?(data: Uint8Array, offset: number): void;
  /** -c: the unit writeCompressed takes (whole units, but at the disk's end), when not `clusterSize`. */
  readonly compressedClusterSize?: number;
  /** The driver takes only compressed writes (a streamOptimized VMDK): qemu-img converts as with -c then. */
  readonly needsCompressedWrites?: boolean;
  /** -B: the target's backing file, for a driver that copies from it itself (qed's copy-on-write of a cluster a write covers in part). */
  readBacking?(backing: Pick<Image, 'virtualSize' | 'read'>): void;
  /** Makes [offset, offset + length) read as zeros over a backing file (-B); absent: the caller writes zeros. */
  writeZeroes?(offset: number, length: number): void;
  /** convert --bitmaps: stores persistent bitmaps as qemu does at close, after every write and before finish(). */
  storeBitmaps?(list: readonly import('./qcow2/writer-bitmaps.ts').NewBitmap[]): void;
  /** Writes what the writer keeps in memory (tables, refcounts, footers) once every write is done. */
  finish(): void;
  /**
   * -c: qemu-img ends a compressed copy with a compressed write of no bytes ("signal EOF to
   * align"), which qemu's qcow driver refuses (and qcow2's into an external data file): its
   * convert exits 1 with no message, the image whole.
   */
  readonly compressedEndFails?: boolean;
}

/** A format's writer: opens an ImageWriter on files `create.layout(plan)` has just written. */
export interface WriterCapability {
  open(files: WriterFiles, plan: CreatePlan): ImageWriter;
}

/** What a new image may take from outside its options: the clock and randomness (UUIDs, CIDs). */
export interface CreateEnvironment {
  /** Seconds since the Unix epoch. */
  now: number;
  /** The new image's name as the user gave it (a VMDK descriptor names its extent by it). */
  filename: string;
  /** The content ID of the VMDK backing file, which a VMDK child records (the host's guest read it). */
  parentCid?: number;
  /** The emulated qemu's full version ("10.0.2"), which VHDX writes as its creator. */
  qemuVersion?: string;
  /** The --object secrets by id (LUKS key-secret, qcow2 encrypt.key-secret). */
  secrets?: ReadonlyMap<string, Uint8Array>;
  randomBytes(n: number): Uint8Array;
}

/** A plan of header writes (formats/repair.ts steps), or why qemu's driver fails it (its errno), or instar's refusal. */
export type HeaderChangePlan = (
  | { steps: import('./repair.ts').RepairStep[] }
  /** `steps`: what qemu wrote before failing (its read-write open's own header rewrite). */
  | { errno: 'ENOSPC' | 'EINVAL' | 'ENOTSUP'; steps?: import('./repair.ts').RepairStep[] }
  | { refused: string });

/** Names `backing` (absent: no backing file) with `format` (absent: none) in the image's metadata. */
export type ChangeBackingCapability = (dev: BlockDevice, backing: Uint8Array | undefined, format: Uint8Array | undefined) => HeaderChangePlan;

/** What `amend` asks of a format (src/formats/qcow2/amend.ts for qcow2). */
export interface AmendCapability {
  /** The amend options [name, type, help] in the driver's declaration order, which its checks follow. */
  readonly options: readonly (readonly [string, CreateOptionType, string])[];
  /**
   * Plans the amendment of an opened image with the options given (the last value of each,
   * normalized as measure's are). An error qemu reports comes back as `error` lines, with the
   * writes qemu makes before it in `steps`.
   */
  plan(dev: BlockDevice, image: Image, values: ReadonlyMap<string, string>, ctx?: AmendContext): AmendPlan;
}

/** What an amend needs beyond its option values (LUKS key slots: formats/luks/key-slots.ts). */
export interface AmendContext {
  /** qemu-img amend --force. */
  force: boolean;
  /** The secrets the options name (new-secret, old-secret), by id, as --object gave them. */
  secrets: ReadonlyMap<string, Uint8Array>;
  /** The secret the image was opened with (key-secret, encrypt.key-secret). */
  key?: Uint8Array;
  /** The -o list as given: qemu's option visitor reads numbers from their text, not their value. */
  optionList: string;
}

/**
 * `progress`: the percentages qemu's driver reports along the way (before its final 100%);
 * `errorHint`: a last line qemu prints after `error` without a newline (error_append_hint with none).
 */
export type AmendPlan = { steps: import('./repair.ts').RepairStep[]; error?: string[]; errorHint?: string; progress?: number[] } | { refused: string };
