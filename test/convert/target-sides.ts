// One convert command line through each oracle and instar, each in a directory of its own so that
// both name the same target 'out'; then status, messages, the target's bytes and its allocation as
// qemu-img map shows it must agree. For tests where the target's layout is the point
// (preallocation, copy offloading).
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { runInstar, runQemu, VERSIONS, type OracleVersion } from '../helpers/oracles.ts';

interface Side {
  text: string;
  bytes?: Buffer;
  map?: string;
}

/** `args` naming files of `dir` by `isInput`; the target format is -O's (raw when absent). */
function side(dir: string, who: string, args: string[], isInput: (arg: string) => boolean): Side {
  const cwd = join(dir, who);
  rmSync(cwd, { recursive: true, force: true });
  mkdirSync(cwd);
  const full = ['convert', ...args.map((a) => (isInput(a) ? join(dir, a) : a)), 'out'];
  const r = who.startsWith('instar-') ? runInstar([...full, '--qemu-version', who.slice(7)], { cwd }) : runQemu(who as OracleVersion, full, { cwd });
  const text = `${r.status}\n${r.stdout}${r.stderr}`;
  const out = join(cwd, 'out');
  if (!existsSync(out)) return { text };
  const o = args.indexOf('-O');
  const format = o >= 0 ? args[o + 1] : 'raw';
  return { text, bytes: readFileSync(out), map: runQemu('7.2', ['map', '--output=json', '-f', format === 'file' ? 'raw' : format, out]).stdout };
}

/** Asserts that instar's convert with `args` (then the target 'out') does what both oracles do. */
export function sameTargetAsOracles(dir: string, args: string[], isInput: (arg: string) => boolean): void {
  for (const version of VERSIONS) {
    const q = side(dir, version, args, isInput);
    const i = side(dir, `instar-${version}`, args, isInput);
    assert.equal(i.text, q.text, `${version}: status and messages`);
    assert.equal(i.bytes === undefined, q.bytes === undefined, `${version}: output file left`);
    if (q.bytes && i.bytes) {
      assert.ok(i.bytes.equals(q.bytes), `${version}: output bytes`);
      assert.equal(i.map, q.map, `${version}: output allocation`);
    }
  }
}
