// Ops a hostile image would like to run, bundled (with the production ops) into a test-only
// guest, dist/test/hostile-guest.cjs. Each returns a value only if the sandbox let it through;
// the tests expect every one of them to end in an error instead.
import { fstatSync, openSync, readFileSync, writeSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { connect } from 'node:net';
import type { Op } from '../../src/ops/types.ts';

const input = (ctx: Parameters<Op>[1]) => {
  const d = ctx.devices.find((x) => x.spec.role === 'input');
  if (!d) throw new Error('no input device');
  return d;
};

export const hostileOps: Record<string, Op> = {
  /** Control: the sandbox still lets an op read its own input fd. */
  'read-input': (_o, ctx) => {
    const d = input(ctx);
    const buf = new Uint8Array(16);
    const n = d.dev.read(buf, 0);
    ctx.emit({ type: 'progress', done: 1, total: 2 });
    return { size: d.dev.size, head: Buffer.from(buf.subarray(0, n)).toString('latin1') };
  },
  /** Which descriptors the guest holds: it should be only those the host meant to give. */
  'list-fds': () => {
    const open: { fd: number; dev: number; ino: number; file: boolean }[] = [];
    for (let fd = 0; fd < 256; fd++) {
      try {
        const st = fstatSync(fd);
        open.push({ fd, dev: st.dev, ino: st.ino, file: st.isFile() });
      } catch {
        // not open
      }
    }
    return { open };
  },
  'open-passwd': () => ({ fd: openSync('/etc/passwd', 'r') }),
  /** Reads any file by path (the guest's own bundle, its code cache): only its entry script may be. */
  'read-path': (o) => ({ bytes: readFileSync(String(o.path)).length }),
  /** Control, not hostile: how the loader fared with the code cache ('plain': no loader ran). */
  'code-cache-state': () => ({ state: (globalThis as Record<symbol, unknown>)[Symbol.for('instar.guestCodeCache')] ?? 'plain' }),
  connect: (o) =>
    new Promise((resolve, reject) => {
      const s = connect({ host: '127.0.0.1', port: Number(o.port) });
      s.on('connect', () => {
        s.destroy();
        resolve({ connected: true });
      });
      s.on('error', reject);
    }),
  spawn: () => {
    const r = spawnSync('/bin/sh', ['-c', 'echo escaped']);
    if (r.error) throw r.error;
    return { status: r.status, stdout: String(r.stdout) };
  },
  'alloc-2g': () => ({ length: Buffer.alloc(2 * 1024 * 1024 * 1024, 1).length }),
  'heap-bomb': () => {
    const keep: number[][] = [];
    for (;;) keep.push(new Array(1_000_000).fill(Math.random()));
  },
  spin: () => {
    let n = 0;
    for (;;) n = (n + 1) | 0;
  },
  'write-input': (_o, ctx) => ({ written: writeSync(input(ctx).spec.fd, 'pwned', 0) }),
  'kill-host': (o) => {
    process.kill(Number(o.pid), 0);
    return { signalled: Number(o.pid) };
  },
  /** A guest that lies: a message no host should accept. */
  'bad-message': () => {
    writeSync(3, JSON.stringify({ type: 'shell', command: 'rm -rf /' }) + '\n');
    return {};
  },
  /** A guest that asks the host to punch holes in a file it was given read-only. */
  'free-input': (_o, ctx) => {
    ctx.emit({ type: 'freed', device: 0, ranges: [[0, 4096, 0]] });
    return {};
  },
  /** A guest that floods the message pipe with one endless line. */
  flood: () => {
    const chunk = Buffer.alloc(1024 * 1024, 0x61);
    for (let i = 0; i < 20; i++) writeSync(3, chunk);
    return {};
  },
  /**
   * A result far larger than the message pipe holds, then the exit at once: the guest's blocking
   * writes must all reach the host before it exits (an asynchronous write would be lost).
   */
  'big-result': (o) => ({ blob: 'r'.repeat(Number(o.bytes)) }),
  /** A guest that dies quietly, without a result. */
  'quiet-exit': () => process.exit(0),
  /** Writes its output, then lingers in its exit (as a slow teardown would) after the result. */
  'write-then-linger': (o, ctx) => {
    const out = ctx.devices.find((x) => x.spec.role === 'output');
    if (!out) throw new Error('no output device');
    writeSync(out.spec.fd, 'written', 0);
    process.on('exit', () => {
      const end = Date.now() + Number(o.ms);
      while (Date.now() < end);
    });
    return { written: true };
  },
  /** A guest whose error text tries to drive the terminal. */
  'escape-error': () => {
    throw new (class extends Error {
      override name = 'ImageError';
    })('evil\x1b[2J\nsecond line\x07');
  },
};
