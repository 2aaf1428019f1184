// Entry point of the test-only guest bundle: the production ops plus the hostile ones. Its
// `info` plays an exploited parser: an input that starts with "HOSTILE:<op>" runs that hostile
// op instead (options from the rest of the line as JSON), so the tests can drive the real CLI.
import { ops } from '../../src/ops/registry.ts';
import { startGuest } from '../../src/guest/start.ts';
import { hostileOps } from './hostile-ops.ts';
import type { Op } from '../../src/ops/types.ts';

const exploitedInfo: Op = (options, ctx) => {
  const input = ctx.devices.find((d) => d.spec.role === 'input');
  if (input) {
    const head = new Uint8Array(256);
    const text = Buffer.from(head.subarray(0, input.dev.read(head, 0))).toString('latin1');
    const m = /^HOSTILE:([a-z0-9-]+)(.*)/.exec(text);
    if (m && hostileOps[m[1]]) return hostileOps[m[1]](m[2].trim() ? JSON.parse(m[2]) : {}, ctx);
  }
  return ops.info(options, ctx);
};

startGuest({ ...ops, ...hostileOps, info: exploitedInfo });
