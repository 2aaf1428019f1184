// The guest bundle's V8 code cache (loaded by src/guest/loader.ts), made at build time by
// running a few ordinary ops through the bundle in a plain node with the guest's own V8 flags
// and saving the code V8 compiled meanwhile. A cache taken right after compiling holds little
// more than the top level (measured: no faster than no cache); one taken after an op holds the
// functions ops run, and saves ~13 ms of each guest start.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bundleId, cacheHeader, ID_MARK } from '../src/guest/loader.ts';
import { codeCachePath } from '../src/host/sandbox/code-cache.ts';
import { defaultLimits } from '../src/host/sandbox/limits.ts';
import { nodeArgs } from '../src/host/sandbox/layers/permission.ts';
import type { GuestRequest } from '../src/protocol/messages.ts';

/** Runs in the training node: the loader's own compile, V8's data saved as the process exits. */
const TRAINER = `
const [loader, bundle, previous, out] = process.argv.slice(1);
const fs = require('node:fs');
const { compileGuest, runGuest } = require(loader);
const script = compileGuest(fs.readFileSync(bundle, 'utf8'), previous ? fs.readFileSync(previous) : undefined);
process.on('exit', () => fs.writeFileSync(out, script.createCachedData()));
runGuest(script);
`;

const INPUT = { fd: 4, role: 'input', writable: false } as const;
const OUTPUT = { fd: 5, role: 'output', writable: true } as const;

interface TrainingStep {
  request: GuestRequest;
  /** The files at fd 4 and 5 (the output is emptied first). */
  input: string;
  output: string;
}

/**
 * What `info`, `convert -O raw|qcow2|vpc` and the conversions back send the guest (as the host
 * built them when this was written): the formats of the benchmark corpus, read and written.
 */
function trainingSteps(dir: string): TrainingStep[] {
  const [raw, qcow2, vpc, out] = ['in.raw', 'in.qcow2', 'in.vpc', 'out.raw'].map((n) => join(dir, n));
  const profile = { major: 10, minor: 0, childNodes: true, dirtyFlag: true, mapCompressed: true, snapshotUnderscores: true, vhdCurrentSize: true, newUsageErrors: true, luksDetachedHeader: true };
  const common = { unsafeQuirks: false, profile: { vhdCurrentSize: false }, secrets: {}, sparseSize: 4096, progress: false, salvage: false };
  const sources = (format: string, fileName: string) => [{ index: 0, format, fileName }];
  const convert = (phase: string, format: string, fileName: string) => ({ ...common, phase, sources: sources(format, fileName), targetIsZero: true, coroutines: 8, worker: 0, workers: 1 });
  const writeImage = (format: string, plan: Record<string, unknown>) => ({ ...common, format, plan, sources: sources('raw', raw), compressed: false, layoutOnly: false, bitmaps: false });
  const qcow2Plan = { version: 3, clusterBits: 16, refcountOrder: 4, size: 1048576, extendedL2: false, lazyRefcounts: false, zstd: false, metadata: false, full: false, dataFileRaw: false };
  const vpcPlan = { fixed: false, force: false, cyls: 31, heads: 4, secsPerCyl: 17, size: 1079296, timestamp: 849183586, uuid: 'a06efd8a024b4cb587b281e7dcab2eea' };
  // Read-only steps get no output device (fd 5 is open all the same).
  const step = (op: string, options: Record<string, unknown>, input: string, output?: string): TrainingStep => ({ request: { op, options, devices: output ? [INPUT, OUTPUT] : [INPUT] }, input, output: output ?? out });
  return [
    step('info', { format: 'raw', unsafeQuirks: false, fileName: raw, profile }, raw),
    step('convert', convert('open', 'raw', raw), raw),
    step('convert', convert('open-copy', 'raw', raw), raw, out),
    step('convert-image', writeImage('qcow2', qcow2Plan), raw, qcow2),
    step('convert', convert('open-copy', 'qcow2', qcow2), qcow2, out),
    step('convert-image', writeImage('vpc', vpcPlan), raw, vpc),
    step('convert', convert('open-copy', 'vpc', vpc), vpc, out),
  ];
}

/**
 * Ends the bundle with its id (a hash of its text), which a cache made for it names; returns the
 * stamped text. Written aside and renamed, never appended: another build rewriting the bundle
 * meanwhile must not end up with this text's id.
 */
export function stampBundle(bundle: string): string {
  const source = readFileSync(bundle, 'utf8');
  if (bundleId(source)) return source;
  const stamped = `${source}\n${ID_MARK}${createHash('sha256').update(source).digest('hex')}\n`;
  const aside = `${bundle}.${process.pid}`;
  writeFileSync(aside, stamped);
  renameSync(aside, bundle);
  return stamped;
}

/**
 * Writes `<bundle>.v8cache` for the loader; returns the training ops' last messages (each
 * should be a result: an error means the requests above no longer match what the host sends,
 * and the cache, still correct, covers less).
 */
export function makeGuestCodeCache(bundle: string, loader: string): string[] {
  const source = stampBundle(bundle);
  const id = bundleId(source)!;
  const dir = mkdtempSync(join(tmpdir(), 'instar-guest-cache-'));
  try {
    // Every step compiles this copy: V8's data must come from one text, the one its id names.
    const text = join(dir, 'guest.cjs');
    writeFileSync(text, source);
    writeFileSync(join(dir, 'in.raw'), Buffer.concat([Buffer.alloc(64 * 1024, 'instar'), Buffer.alloc(960 * 1024)]));
    const flags = nodeArgs('', defaultLimits('convert', 2, 1), false);
    const outcomes: string[] = [];
    let previous = '';
    trainingSteps(dir).forEach(({ request, input, output }, i) => {
      const out = join(dir, `step${i}.data`);
      writeFileSync(output, '');
      const inFd = openSync(input, 'r');
      const outFd = openSync(output, 'r+');
      try {
        const r = spawnSync(process.execPath, [...flags, '-e', TRAINER, loader, text, previous, out], {
          stdio: ['pipe', 'ignore', 'pipe', 'pipe', inFd, outFd],
          input: JSON.stringify(request),
          env: {},
          timeout: 60_000,
        });
        const messages = String(r.output?.[3] ?? '').trim().split('\n');
        outcomes.push(messages[messages.length - 1] || `exit ${r.status}: ${String(r.stderr).trim().split('\n')[0]}`);
      } finally {
        closeSync(inFd);
        closeSync(outFd);
      }
      // A step killed before its exit saved nothing: the cache builds on the one before.
      if (existsSync(out)) previous = out;
    });
    if (!previous) throw new Error(`no training run saved V8's data (${outcomes.join('; ')})`);
    const cache = codeCachePath(bundle);
    const aside = `${cache}.${process.pid}`;
    const data = readFileSync(previous);
    writeFileSync(aside, Buffer.concat([Buffer.from(cacheHeader(id, data), 'latin1'), data]));
    // Renamed into place: a guest starting meanwhile reads the old file or the new one, whole.
    renameSync(aside, cache);
    return outcomes;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
