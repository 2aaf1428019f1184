// What a format's consistency check reports (qemu's BdrvCheckResult plus the lines its checker
// prints on stderr). Checkers are pure like the rest of format code: they read a BlockDevice.
import type { BlockDevice, Image } from './types.ts';

/**
 * One stderr line of a check. Most lines are text; the per-cluster refcount comparison (which a
 * damaged image can repeat for millions of clusters) travels as runs:
 * [kind, first cluster, count, stored refcount, computed references], kind 0 = "Leaked", 1 = "ERROR",
 * 3 = "Repairing" (check -r setting the refcount to the references).
 * Refcounts are decimal strings: they are uint64 in qemu. [2, text] is a line qemu prints with
 * error_report, which the host prefixes with the program's name ("qemu-img: ").
 */
export type CheckLine = string | [kind: 2, text: string] | [kind: 0 | 1 | 3, cluster: number, count: number, refcount: string, reference: string];

/** qemu's BdrvCheckResult; zero fields are absent from its JSON output. */
export interface CheckCounts {
  'check-errors': number;
  corruptions: number;
  leaks: number;
  'corruptions-fixed': number;
  'leaks-fixed': number;
  'image-end-offset': number;
  'total-clusters': number;
  'allocated-clusters': number;
  'fragmented-clusters': number;
  'compressed-clusters': number;
}

export interface CheckReport extends CheckCounts {
  lines: CheckLine[];
  /** Lines left out past the report's bound (a hostile image can ask for billions). */
  omitted: number;
  /**
   * The checker stopped with an error (qemu's negative return): strerror's text, printed by
   * qemu-img as "Check failed: <text>" with nothing on stdout.
   */
  failure?: string;
}

/** What a checker may need besides the image: the emulated qemu's major version (checks changed). */
export interface CheckContext {
  qemuMajor: number;
  /** --unsafe-quirks: a repair may do what qemu does even where that loses data (qcow2 snapshots). */
  unsafeQuirks?: boolean;
}

/** qemu-img check -r's modes (BDRV_FIX_LEAKS, and BDRV_FIX_ERRORS with it). */
export type RepairMode = 'leaks' | 'all';

/**
 * How a format answers check -r (its repair capability; formats/repair.ts applies the plans).
 *  - 'refused': qemu's checker refuses to fix (ENOTSUP: "does not support checks").
 *  - 'at-open': the writable open already repaired what qemu repairs (a VHDX log replay); the
 *    checker reports it in `corruptions-fixed`, and nothing else is fixed, as in qemu.
 *  - a planner: given the read-only check's report, the steps that repair it (counting what it
 *    fixes in the report, with qemu's lines), or a reason instar refuses to repair this image.
 * A checkable format with no entry is one qemu repairs and instar does not: -r then refuses any
 * image whose check finds something to fix, and passes a clean one through.
 */
export type RepairCapability = 'refused' | 'at-open' | RepairPlanner;

export type RepairPlanner = (image: Image, dev: BlockDevice, report: CheckReport, mode: RepairMode, ctx?: CheckContext) => RepairPlan;

/**
 * `close`: what qemu writes when it closes the image, after the second check (qcow2 persistent
 * bitmaps stored anew), planned over the repaired image.
 */
export type RepairPlan =
  | { steps: import('./repair.ts').RepairStep[]; close?: (repaired: BlockDevice) => import('./repair.ts').RepairStep[] }
  | { refused: string };

/** A format's checker: the opened image (for what open already parsed) and its file. */
export type Checker = (image: Image, dev: BlockDevice, report: CheckReport, ctx: CheckContext) => void;

/** Most lines one report carries; each is short, so the result stays far below the message limit. */
export const MAX_CHECK_LINES = 100_000;

export function emptyReport(): CheckReport {
  return {
    'check-errors': 0, corruptions: 0, leaks: 0, 'corruptions-fixed': 0, 'leaks-fixed': 0,
    'image-end-offset': 0, 'total-clusters': 0, 'allocated-clusters': 0, 'fragmented-clusters': 0, 'compressed-clusters': 0,
    lines: [], omitted: 0,
  };
}

/** Adds a line unless the report is full; a function is only called (formatted) when it fits. */
export function addLine(report: CheckReport, line: CheckLine | (() => CheckLine)): void {
  if (report.lines.length < MAX_CHECK_LINES) report.lines.push(typeof line === 'function' ? line() : line);
  else report.omitted++;
}

/** A checker stops with qemu's negative errno: the op turns this into `failure`. */
export class CheckFailure extends Error {
  constructor(readonly strerror: string) {
    super(strerror);
    this.name = 'CheckFailure';
  }
}
