// A guest bundle's top level runs when its startup snapshot is built, not when a guest starts
// (scripts/guest-snapshot.ts): whatever it read of the process (environment, argv, cwd, clock,
// randomness, CPUs, stdio, files) would be the build's, frozen into every guest. This runs each
// bundle's top level as a snapshot build would, with every such read trapped until node would
// take the snapshot (so the ops' warm-up, src/guest/warm-up.ts, which settles later, is audited
// too), and requires that it read none (timers count as reads), added no global or process
// listener, and only registered the main function.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { HOSTILE_GUEST, scratchDir, writeInput } from './helpers.ts';
import { productionGuestPath } from '../../src/host/sandbox/guest-path.ts';

/** Runs in a plain node: the bundle (argv[1]) compiled as node would, under traps; prints what it touched. */
const AUDIT = `
const fs = require('node:fs'), os = require('node:os'), v8 = require('node:v8'), vm = require('node:vm');
const touched = [];
let auditing = false;
const note = (what) => { if (auditing) touched.push(what); };
function wrapFn(obj, name, label) {
  const real = obj[name];
  if (typeof real !== 'function') return;
  const wrapped = function (...args) { note(label); return new.target ? Reflect.construct(real, args, new.target) : real.apply(this, args); };
  Object.assign(wrapped, real);
  obj[name] = wrapped;
}
function wrapGetter(obj, name, label) {
  const d = Object.getOwnPropertyDescriptor(obj, name);
  if (!d || !d.configurable) return;
  const read = d.get ? () => d.get.call(obj) : () => d.value;
  Object.defineProperty(obj, name, { get() { note(label); return read(); }, configurable: true, enumerable: d.enumerable });
}
for (const name of ['env', 'argv', 'execArgv', 'argv0', 'execPath', 'pid', 'ppid', 'title', 'stdin', 'stdout', 'stderr', 'debugPort']) wrapGetter(process, name, 'process.' + name);
for (const name of ['cwd', 'hrtime', 'uptime', 'memoryUsage', 'cpuUsage', 'resourceUsage', 'getuid', 'getgid', 'umask']) wrapFn(process, name, 'process.' + name + '()');
if (process.hrtime) wrapFn(process.hrtime, 'bigint', 'process.hrtime.bigint()');
// Not os.arch() nor os.endianness(): a blob is bound to the node binary that made it (its record).
for (const name of ['cpus', 'availableParallelism', 'hostname', 'tmpdir', 'homedir', 'userInfo', 'totalmem', 'freemem', 'uptime', 'loadavg', 'networkInterfaces', 'release']) wrapFn(os, name, 'os.' + name + '()');
for (const name of Object.keys(fs)) if (/Sync$/.test(name) || ['read', 'write', 'open', 'readFile', 'createReadStream', 'createWriteStream'].includes(name)) wrapFn(fs, name, 'fs.' + name + '()');
wrapFn(Date, 'now', 'Date.now()');
const RealDate = Date;
globalThis.Date = new Proxy(RealDate, { construct(t, args, nt) { if (args.length === 0) note('new Date()'); return Reflect.construct(t, args, nt); }, apply() { note('Date()'); return RealDate(); } });
wrapFn(Math, 'random', 'Math.random()');
wrapFn(performance, 'now', 'performance.now()');
wrapFn(globalThis.crypto, 'getRandomValues', 'crypto.getRandomValues()');
wrapFn(globalThis.crypto, 'randomUUID', 'crypto.randomUUID()');
for (const name of ['setTimeout', 'setInterval', 'setImmediate', 'queueMicrotask']) wrapFn(globalThis, name, name + '()');
let registered = 0;
const startupSnapshot = { isBuildingSnapshot: () => true, setDeserializeMainFunction: (fn) => { if (typeof fn === 'function') registered++; }, addSerializeCallback() {}, addDeserializeCallback() {} };
const fakeV8 = { ...v8, startupSnapshot };
// What a snapshot build's require gives: built-in modules only.
const builtinRequire = (id) => {
  const bare = id.replace(/^node:/, '');
  if (bare === 'v8') return fakeV8;
  const m = require(id);
  if (bare === 'crypto') { wrapFn(m, 'randomBytes', 'crypto.randomBytes()'); wrapFn(m, 'randomUUID', 'crypto.randomUUID()'); }
  return m;
};
const source = fs.readFileSync(process.argv[1], 'utf8');
const fn = new vm.Script('(function (exports, require, module, __filename, __dirname) {' + source + '\\n})', { filename: 'guest.cjs' }).runInThisContext();
const module = { exports: {} };
// What could outlive the top level besides what the traps see: globals and process listeners.
const globals = () => Object.getOwnPropertyNames(globalThis).concat(Object.getOwnPropertySymbols(globalThis).map(String));
const listeners = () => process.eventNames().map((e) => String(e) + ':' + process.listenerCount(e));
// Node takes the snapshot once the event loop is empty: whatever ran until then is audited.
process.on('beforeExit', () => {
  if (!auditing) return;
  auditing = false;
  const left = { globals: globals().filter((g) => !before.globals.includes(g)), listeners: listeners().filter((l) => !before.listeners.includes(l)) };
  fs.writeSync(1, JSON.stringify({ touched: [...new Set(touched)], registered, ...left }));
});
const before = { globals: globals(), listeners: listeners() };
auditing = true;
try { fn(module.exports, builtinRequire, module, '/guest.cjs', '/'); } catch (e) { note('threw: ' + e.message); }
`;

interface Audit {
  touched: string[];
  registered: number;
  /** Globals and process listeners (event:count) there were not before. */
  globals: string[];
  listeners: string[];
}

function audit(bundle: string): Audit {
  const r = spawnSync(process.execPath, ['-e', AUDIT, bundle], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as Audit;
}

describe('guest bundle top level (frozen into its startup snapshot)', () => {
  const scratch = scratchDir();
  after(scratch.cleanup);

  it('the audit sees what a top level reads (so it can fail)', () => {
    const reader = writeInput(scratch.dir, 'reader.cjs', [
      "const v8 = require('node:v8');",
      'const home = process.env.HOME, started = Date.now(), cpus = require("node:os").cpus().length, seed = Math.random();',
      "const head = require('node:fs').readFileSync('/etc/hostname');",
      'v8.startupSnapshot.setDeserializeMainFunction(() => [home, started, cpus, seed, head]);',
      // Later, as the ops' warm-up runs: still before the snapshot is taken.
      "(async () => { await null; globalThis.leftOver = process.argv.length; process.on('exit', () => {}); await null; performance.now(); })();",
    ].join('\n'));
    const { touched, registered, globals, listeners } = audit(reader);
    for (const read of ['Date.now()', 'Math.random()', 'fs.readFileSync()', 'os.cpus()', 'process.env', 'process.argv', 'performance.now()']) assert.ok(touched.includes(read), `${read} not seen: ${touched.join(', ')}`);
    assert.equal(registered, 1);
    assert.deepEqual(globals, ['leftOver']);
    assert.deepEqual(listeners, ['exit:1']);
  });

  for (const bundle of [productionGuestPath(), HOSTILE_GUEST]) {
    it(`${bundle.replace(/.*\/dist\//, 'dist/')} reads no process state at its top level or in its warm-up, leaves nothing behind, and only registers serving`, () => {
      assert.deepEqual(audit(bundle), { touched: [], registered: 1, globals: [], listeners: [] });
    });
  }
});
