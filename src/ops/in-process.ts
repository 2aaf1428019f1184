// An op run in the caller's own process (--sandbox=none, the library's trusted mode): the devices
// over the host's fds, the op, and a failure described exactly as the sandboxed guest describes
// it. The CLI bundles this file apart (dist/ops.cjs, scripts/build.mjs) with everything it uses,
// so the error classes it tests against are the ones the ops throw, never a second copy.
import { FdDevice, freedMessages, settleFreed } from '../io/fd-device.ts';
import { describeError, errorWarnings, WarningList } from '../guest/describe-error.ts';
import { checkedDataRuns } from '../guest/data-runs.ts';
import type { DeviceSpec, GuestMessage, GuestWarning } from '../protocol/messages.ts';
import { ops } from './registry.ts';

/** The op's value and warnings, its failure in the guest's words, or an op that does not exist. */
export type InProcessOutcome =
  | { kind: 'done'; value: unknown; warnings: GuestWarning[] }
  | { kind: 'failed'; message: string; warnings: GuestWarning[] }
  | { kind: 'unknown-op' };

/** `devices` as the guest's table, but each `fd` is the caller's own. */
export async function runOpInProcess(op: string, options: Record<string, unknown>, devices: readonly DeviceSpec[], emit: (msg: GuestMessage) => void): Promise<InProcessOutcome> {
  const handler = Object.prototype.hasOwnProperty.call(ops, op) ? ops[op] : undefined;
  if (!handler) return { kind: 'unknown-op' };
  const warnings = new WarningList();
  let wrapped: { spec: DeviceSpec; dev: FdDevice }[] = [];
  try {
    wrapped = devices.map((d, i) => ({ spec: { fd: i, role: d.role, writable: d.writable, name: d.name, referrer: d.referrer }, dev: new FdDevice(d.fd, d.writable, checkedDataRuns(d.dataRuns, d.dataRunsEnd, d.dataSpans), true) }));
    const value = await handler(options, { devices: wrapped, emit, warn: (w) => warnings.add(w) });
    for (const msg of freedMessages(wrapped)) emit(msg);
    return { kind: 'done', value, warnings: warnings.list };
  } catch (e) {
    settleFreed(wrapped);
    for (const w of errorWarnings(e)) warnings.add(w);
    return { kind: 'failed', message: describeError(e), warnings: warnings.list };
  }
}
