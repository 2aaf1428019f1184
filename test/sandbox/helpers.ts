// Shared by the sandbox tests: the hostile guest bundle, a scratch input file, and a runner
// that returns the op's error message (or fails the test if the op got through).
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { createServer, type AddressInfo } from 'node:net';
import { ROOT } from '../helpers/oracles.ts';
import { runOp, OpError, type RunOptions, type SandboxMode } from '../../src/host/sandbox/run.ts';

export const HOSTILE_GUEST = join(ROOT, 'dist', 'test', 'hostile-guest.cjs');

export function scratchDir(): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'instar-sandbox-'));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export function writeInput(dir: string, name: string, bytes: string | Buffer): string {
  const path = join(dir, name);
  writeFileSync(path, bytes);
  return path;
}

/** Runs `op` in the sandbox on a read-only input; resolves to its value or throws OpError. */
export async function runHostile(mode: SandboxMode, op: string, inputPath: string, options: Record<string, unknown> = {}, extra: Partial<RunOptions> = {}): Promise<unknown> {
  const fd = openSync(inputPath, 'r');
  try {
    return await runOp(op, options, [{ fd, role: 'input', writable: false }], { mode, guestPath: HOSTILE_GUEST, ...extra });
  } finally {
    closeSync(fd);
  }
}

/** The op must fail with a clean, one-line OpError; returns its message. */
export async function expectRefused(run: Promise<unknown>): Promise<string> {
  let value: unknown;
  try {
    value = await run;
  } catch (e) {
    assert.ok(e instanceof OpError, `expected OpError, got ${(e as Error)?.stack ?? e}`);
    assertOneLine(e.message);
    return e.message;
  }
  assert.fail(`the sandbox let the op through: ${JSON.stringify(value)}`);
}

export function assertOneLine(message: string): void {
  assert.ok(message.length > 0, 'empty error message');
  assert.doesNotMatch(message, /[\n\r]/, `multi-line message: ${JSON.stringify(message)}`);
  assert.doesNotMatch(message, /\bat .*:\d+:\d+/, `stack trace in message: ${message}`);
  assert.doesNotMatch(message, /[\u0000-\u001f\u007f-\u009f]/, `control character in message: ${JSON.stringify(message)}`);
}

/** A TCP server on 127.0.0.1 that counts the connections it gets (a sandboxed guest must get none). */
export interface CountingServer {
  port: number;
  connections: () => number;
  close: () => void;
}

export async function countingServer(): Promise<CountingServer> {
  let connections = 0;
  const server = createServer((s) => {
    connections++;
    s.destroy();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as AddressInfo).port, connections: () => connections, close: () => server.close() };
}
