// The guest's whole life: read one request from stdin, wrap the inherited fds, run the op,
// report on fd 3, exit. It runs under the sandbox (DESIGN.md §1), so it opens nothing by
// path, and whatever goes wrong leaves as one line of text, never a stack trace.
import { readSync, writeSync } from 'node:fs';
import { FdDevice, freedMessages, settleFreed } from '../io/fd-device.ts';
import { checkedDataRuns } from './data-runs.ts';
import { describeError, errorWarnings, RequestError, WarningList } from './describe-error.ts';
import { MAX_MESSAGE_BYTES, MAX_REQUEST_BYTES, type DeviceSpec, type GuestMessage, type GuestRequest } from '../protocol/messages.ts';
import type { Op } from '../ops/types.ts';

const MESSAGE_FD = 3;
const ROLES = ['input', 'backing', 'data-file', 'extent', 'output'];

/** Sleeps without spinning, for the rare non-blocking pipe that says EAGAIN. */
function pause(): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
}

function retryingEagain<T>(fn: () => T): T {
  for (;;) {
    try {
      return fn();
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
      pause();
    }
  }
}

function readRequest(): GuestRequest {
  // Most requests are a few hundred bytes; one carrying many data runs may be megabytes: the
  // buffer grows as the request arrives rather than being allocated at its limit every start.
  let buf = Buffer.allocUnsafe(64 * 1024);
  let len = 0;
  for (;;) {
    if (len === buf.length) {
      const bigger = Buffer.allocUnsafe(Math.min(buf.length * 4, MAX_REQUEST_BYTES + 1));
      buf.copy(bigger, 0, 0, len);
      buf = bigger;
    }
    const n = retryingEagain(() => readSync(0, buf, len, buf.length - len, null));
    if (n === 0) break;
    len += n;
    if (len > MAX_REQUEST_BYTES) throw new RequestError(`request larger than ${MAX_REQUEST_BYTES} bytes`);
  }
  let req: unknown;
  try {
    req = JSON.parse(buf.subarray(0, len).toString('utf8'));
  } catch {
    throw new RequestError('request is not JSON');
  }
  const r = req as GuestRequest;
  if (typeof r !== 'object' || r === null || typeof r.op !== 'string' || typeof r.options !== 'object' || r.options === null || !Array.isArray(r.devices)) {
    throw new RequestError('malformed request');
  }
  for (const d of r.devices as DeviceSpec[]) {
    if (!Number.isInteger(d?.fd) || d.fd <= MESSAGE_FD || !ROLES.includes(d.role) || typeof d.writable !== 'boolean') {
      throw new RequestError('malformed device in request');
    }
  }
  return r;
}

function send(msg: GuestMessage): void {
  let line = JSON.stringify(msg) + '\n';
  if (Buffer.byteLength(line) > MAX_MESSAGE_BYTES) line = JSON.stringify({ type: 'error', message: `${msg.type} message too large` }) + '\n';
  const bytes = Buffer.from(line);
  let done = 0;
  while (done < bytes.length) done += retryingEagain(() => writeSync(MESSAGE_FD, bytes, done, bytes.length - done));
}

/** Lines for stderr the op queued (sent with its result or error). */
const warnings = new WarningList();
const withWarnings = () => (warnings.list.length > 0 ? { warnings: warnings.list } : {});

function fail(e: unknown): never {
  try {
    for (const w of errorWarnings(e)) warnings.add(w);
    send({ type: 'error', message: describeError(e), ...withWarnings() });
  } finally {
    process.exit(1);
  }
}

/** Runs the guest over the given op table (production ops, or tests' ops plus hostile ones). */
export async function serveGuest(ops: Record<string, Op>): Promise<void> {
  process.on('uncaughtException', fail);
  process.on('unhandledRejection', fail);
  let devices: { spec: DeviceSpec; dev: FdDevice }[] = [];
  try {
    const req = readRequest();
    if (!Object.prototype.hasOwnProperty.call(ops, req.op)) throw new RequestError(`unknown op '${req.op}'`);
    devices = req.devices.map((spec) => ({ spec, dev: new FdDevice(spec.fd, spec.writable, checkedDataRuns(spec.dataRuns, spec.dataRunsEnd, spec.dataSpans), true) }));
    const emit = (msg: GuestMessage) => {
      // Only the streaming kinds: the op's end is its return value or exception.
      if (msg.type !== 'result' && msg.type !== 'error') send(msg);
    };
    const value = await ops[req.op](req.options, { devices, emit, warn: (w) => warnings.add(w) });
    for (const msg of freedMessages(devices)) send(msg);
    send({ type: 'result', value: value ?? null, ...withWarnings() });
  } catch (e) {
    settleFreed(devices);
    fail(e);
  }
  process.exit(0);
}
