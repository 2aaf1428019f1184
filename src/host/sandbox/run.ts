import { cleanGuestError, cleanGuestWarnings } from './guest-messages.ts';
import { FreedRanges } from '../freed-ranges.ts';
import type { DeviceRole, DeviceSpec, GuestMessage, GuestWarning, MapEntry } from '../../protocol/messages.ts';
import type { SandboxLimits } from './limits.ts';
import type { LayerName } from './probe.ts';

export type { SandboxLimits } from './limits.ts';
export type { LayerName } from './probe.ts';

export type SandboxMode = 'auto' | 'strict' | 'none';

export interface RunOptions {
  mode: SandboxMode;
  /** Called with one line per active/missing layer when --debug is given. */
  debug?: (line: string) => void;
  onProgress?: (done: number, total: number) => void;
  /** Files the op asked for (backing, data-file, extents) in a `need-files` message. */
  onNeedFiles?: (files: { role: DeviceRole; name: string; format?: string }[]) => void;
  /** convert --salvage: source sectors it could not read (checked by the host before use). */
  onUnreadable?: (kind: 'read' | 'block-status', offset: number, length: number, reason: string, notice?: string) => void;
  /** `map`'s entries, streamed in bounded chunks (checked by the host before use). */
  onMapEntries?: (entries: MapEntry[]) => void;
  /** Ranges of a writable device the op freed (runOp punches them; freed-ranges.ts). */
  onFreed?: (device: number, ranges: [number, number, number][]) => void;
  /** The lines for stderr that came with the op's result (cleaned); an error carries its own. */
  onWarnings?: (warnings: GuestWarning[]) => void;
  /** Overrides of the op's default resource limits (see limits.ts). */
  limits?: Partial<SandboxLimits>;
  /** Tests only: run this guest bundle instead of dist/guest.cjs. */
  guestPath?: string;
  /** Tests only: behave as if these layers were missing on this machine. */
  disableLayers?: LayerName[];
}

/** A file the host opened for an op, with the role the op will see. */
export interface HostDevice {
  fd: number;
  role: DeviceSpec['role'];
  writable: boolean;
  name?: string;
  /** Index of the device whose image named this file. */
  referrer?: number;
  /** Where the file has data (host/data-runs.ts), for block status; absent when unknown. */
  dataRuns?: [number, number][];
  /** Where dataRuns stop describing the file (a file with more runs than a request carries). */
  dataRunsEnd?: number;
  /** Past dataRunsEnd: spans covering all the data left, holes outside them. */
  dataSpans?: [number, number][];
}

/** A failure reported by an op: `message` is qemu-style text for the user. */
export class OpError extends Error {
  /** Lines qemu would print on stderr before this error (cleaned guest data). */
  warnings: GuestWarning[] = [];
  constructor(message: string, warnings?: GuestWarning[]) {
    super(message);
    if (warnings) this.warnings = warnings;
    this.name = 'OpError';
  }
}

/** Runs one op over the given devices, in the sandboxed guest or (mode 'none') in-process. */
export async function runOp(op: string, options: Record<string, unknown>, devices: HostDevice[], run: RunOptions): Promise<unknown> {
  // What the op freed is punched once it succeeded, its writes durable (freed-ranges.ts).
  const freed = new FreedRanges(devices);
  const withFreed: RunOptions = { ...run, onFreed: (device, ranges) => freed.add(device, ranges) };
  let value: unknown;
  if (run.mode === 'none') value = await runInProcess(op, options, devices, withFreed);
  else {
    // The sandboxed launcher lives in launch.ts (issue 2, sandbox part).
    const { runSandboxed } = await import('./launch.ts');
    value = await runSandboxed(op, options, devices, withFreed);
  }
  const problem = freed.punch();
  if (problem !== undefined) throw new OpError(problem);
  return value;
}

/**
 * Hands a streamed message (anything but the op's end: result, error) to its RunOptions callback,
 * for the sandboxed guest's checked messages and the in-process ops' alike. False for the end.
 */
export function deliverStreamed(msg: GuestMessage, run: RunOptions): boolean {
  if (msg.type === 'progress') run.onProgress?.(msg.done, msg.total);
  else if (msg.type === 'need-files') run.onNeedFiles?.(msg.files);
  else if (msg.type === 'map-entries') run.onMapEntries?.(msg.entries);
  else if (msg.type === 'unreadable') run.onUnreadable?.(msg.kind, msg.offset, msg.length, msg.reason, msg.notice);
  else if (msg.type === 'freed') run.onFreed?.(msg.device, msg.ranges);
  else return false;
  return true;
}

async function runInProcess(op: string, options: Record<string, unknown>, devices: HostDevice[], run: RunOptions): Promise<unknown> {
  // Loaded only here: a sandboxed run never needs the op code in the host process.
  const { runOpInProcess } = await import('../../ops/in-process.ts');
  const outcome = await runOpInProcess(op, options, devices, (msg) => deliverStreamed(msg, run));
  if (outcome.kind === 'unknown-op') throw new OpError(`unknown op '${op}'`);
  // The same cleaning as for the sandboxed guest's messages, never a stack trace.
  if (outcome.kind === 'failed') throw new OpError(cleanGuestError(outcome.message), cleanGuestWarnings(outcome.warnings));
  run.onWarnings?.(cleanGuestWarnings(outcome.warnings));
  return outcome.value;
}
