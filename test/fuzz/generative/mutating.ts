// The generative hunt of the mutating commands (npm run hunt -- mutating): a random image (the
// shared builder, images.ts) plus a rebase target made the same way, copied twice; then a random
// sequence of resize/amend/snapshot/rebase/commit/bitmap/check -r command lines, qemu-io writes
// (some killed mid-way) and refcounts edited one up or down (leaks and errors for check -r)
// (mutating-steps.ts) is run, each command by the oracle on one copy and by instar (in-process,
// --sandbox=none, or the built CLI sandboxed) on the other. After every step: stdout, stderr and
// exit status equal, every file of the directory equal byte for byte (masked: qcow2 snapshot
// dates, which instar stamps with its own clock; snapshot -l's date column; VMDK CIDs, which
// qemu draws at random), and qemu-img check of instar's top no worse than of qemu's. A sequence
// stops at its first difference (the copies have diverged). Each version runs its own sequence
// from the same seed.
import { spawnSync } from 'node:child_process';
import { closeSync, fstatSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, readSync, rmSync, statSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Rng } from '../prng.ts';
import { oracle, runInstar, runQemu, type OracleVersion, type RunResult } from '../../helpers/oracles.ts';
import { runInProcess } from '../../helpers/in-process.ts';
import { maskSnapshotDates } from '../../snapshot/harness.ts';
import { buildImage, describeBuild } from './images.ts';
import { nextStep, type ImageState, type Step } from './mutating-steps.ts';
import { documentedRefusal } from './documented.ts';
import type { CaseReport, HuntArea, Mismatch } from './area.ts';

export interface MutatingFinding {
  seed: number;
  version: OracleVersion;
  step: number;
  command: string;
  what: string;
  detail: string;
  /** The image recipe and the steps before this one: enough to replay it by hand. */
  replay: string;
}

/**
 * A step where instar refused by design (nothing written): --unsafe-quirks gave qemu's answer,
 * or the refusal is one README.md documents (`documented`: why; qemu's copy was taken over).
 */
export interface IntendedDifference {
  seed: number;
  version: OracleVersion;
  step: number;
  command: string;
  refusal: string;
  documented?: string;
}

export interface MutatingOptions {
  steps?: number;
  /** Run instar's built CLI, sandboxed, instead of in-process. */
  cli?: boolean;
  versions?: readonly OracleVersion[];
  keep?: boolean;
  /** An empty directory to work in (kept); otherwise a temporary one, removed unless `keep`. */
  dir?: string;
}

const shell = (args: string[]): string => args.map((a) => (/^[\w./=,:+-]+$/.test(a) ? a : `'${a}'`)).join(' ');

/** A qemu-img info of the oracle's copy, boiled down to what the step generator draws on. */
function readState(version: OracleVersion, dir: string, file: string, others: ImageState['others'], previous?: ImageState): ImageState | undefined {
  const r = runQemu(version, ['info', '--output=json', '-U', file], { cwd: dir, timeoutMs: 30_000 });
  if (r.status !== 0) return previous;
  const j = JSON.parse(r.stdout) as {
    format: string; 'virtual-size': number; 'cluster-size'?: number; 'backing-filename'?: string;
    snapshots?: { id: string; name: string }[];
    'format-specific'?: { data?: { compat?: string; bitmaps?: { name: string }[] } };
  };
  return {
    file, format: j.format, virtualSize: j['virtual-size'], clusterSize: j['cluster-size'] ?? 65536,
    compat: j['format-specific']?.data?.compat,
    snapshots: (j.snapshots ?? []).map((s) => ({ id: s.id, name: s.name })),
    bitmaps: (j['format-specific']?.data?.bitmaps ?? []).map((b) => b.name),
    backing: j['backing-filename'], others,
  };
}

/** A file's bytes with what qemu draws at random or from the clock masked. */
function masked(bytes: Buffer): Buffer {
  if (bytes.length >= 4 && bytes.readUInt32BE(0) === 0x514649fb) return maskSnapshotDates(bytes);
  // VMDK: the descriptor's CID (sparse header 'KDMV' or a descriptor file) is random per write.
  const head = bytes.subarray(0, Math.min(bytes.length, 1024 * 1024)).toString('latin1');
  if (head.startsWith('KDMV') || head.startsWith('# Disk DescriptorFile')) {
    return Buffer.from(head.replace(/\b(parentCID|CID)=[0-9a-f]{1,8}\b/g, '$1=xxxxxxxx') + bytes.subarray(head.length).toString('latin1'), 'latin1');
  }
  return bytes;
}

// Snapshot dates (instar's clock) and the two random digits of qemu's node names ("#block1NN").
const maskDates = (text: string): string => text.replace(/\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}/g, 'DATE').replace(/(#block\d+)\d\d\b/g, '$1RR');
const PROGRESS = / {4}\(\d+\.\d\d\/100%\)\r/g;
const sameOutput = (q: RunResult, i: RunResult): boolean => maskDates(q.stdout) === maskDates(i.stdout) && maskDates(q.stderr) === maskDates(i.stderr) && q.status === i.status;

/** Files larger than this are compared by qemu-img compare -f raw (holes skipped), not read whole. */
const BIG = 256 * 1024 * 1024;

/**
 * Runs `fn` while the snapshot dates of the qcow2 files among `paths` read as zeros (as masked()
 * masks them in files small enough to read whole), then puts them back.
 */
function withSnapshotDatesZeroed<T>(paths: string[], fn: () => T): T {
  const saved: { fd: number; pos: number; bytes: Buffer }[] = [];
  try {
    for (const path of paths) {
      const fd = openSync(path, 'r+');
      saved.push({ fd, pos: -1, bytes: Buffer.alloc(0) });
      const head = Buffer.alloc(72);
      if (readSync(fd, head, 0, 72, 0) < 72 || head.readUInt32BE(0) !== 0x514649fb) continue;
      let at = Number(head.readBigUInt64BE(64));
      for (let i = 0; i < Math.min(head.readUInt32BE(60), 65536); i++) {
        at = Math.ceil(at / 8) * 8;
        const entry = Buffer.alloc(40);
        if (readSync(fd, entry, 0, 40, at) < 40) break;
        saved.push({ fd, pos: at + 16, bytes: Buffer.from(entry.subarray(16, 24)) });
        writeSync(fd, Buffer.alloc(8), 0, 8, at + 16);
        at += 40 + entry.readUInt32BE(36) + entry.readUInt16BE(12) + entry.readUInt16BE(14);
      }
    }
    return fn();
  } finally {
    for (const s of saved.reverse()) {
      if (s.pos >= 0) writeSync(s.fd, s.bytes, 0, 8, s.pos);
      else closeSync(s.fd);
    }
  }
}

function compareDirs(qdir: string, idir: string): string | undefined {
  const names = readdirSync(qdir).sort();
  const inames = readdirSync(idir).sort();
  if (names.join('/') !== inames.join('/')) return `files: qemu [${names}] instar [${inames}]`;
  for (const name of names) {
    const qsize = statSync(join(qdir, name)).size;
    const isize = statSync(join(idir, name)).size;
    if (qsize !== isize) return `${name}: qemu ${qsize} bytes, instar ${isize}`;
    // A big (sparse) file, a raw disk grown far: qemu-img compare reads only its data.
    if (qsize > BIG) {
      const paths = [join(qdir, name), join(idir, name)];
      const r = withSnapshotDatesZeroed(paths, () => runQemu('10.0', ['compare', '-q', '-f', 'raw', '-F', 'raw', ...paths], { timeoutMs: 120_000 }));
      if (r.status !== 0) return `${name}: its ${qsize} bytes differ (qemu-img compare -f raw: ${r.status})`;
      continue;
    }
    const q = readFileSync(join(qdir, name));
    const i = readFileSync(join(idir, name));
    const mq = masked(q);
    const mi = masked(i);
    if (!mq.equals(mi)) {
      let at = 0;
      while (mq[at] === mi[at]) at++;
      return `${name}: first different byte at ${at} (0x${at.toString(16)}): qemu ${mq.subarray(at, at + 16).toString('hex')} instar ${mi.subarray(at, at + 16).toString('hex')}`;
    }
  }
  return undefined;
}

/**
 * Every differing image of the two copies reads the same (qemu-img compare), and a qcow2 checks as
 * qemu's does: the same counts but for fragmentation, which the layout decides (a base that had
 * leaks or corruptions before keeps them on both sides).
 */
function sameContent(version: OracleVersion, qdir: string, idir: string): boolean {
  for (const name of readdirSync(qdir)) {
    if (statSync(join(qdir, name)).size > BIG) return false;
    const q = readFileSync(join(qdir, name));
    if (q.equals(readFileSync(join(idir, name)))) continue;
    // A VMDK extent file is compared through the descriptor that names it (which differs too: its CID).
    if (namedAsExtent(qdir, name)) continue;
    if (runQemu(version, ['compare', '-U', join(qdir, name), join(idir, name)], { timeoutMs: 60_000 }).status !== 0) return false;
    if (q.readUInt32BE(0) === 0x514649fb && checkVerdict(version, idir, name) !== checkVerdict(version, qdir, name)) return false;
  }
  return true;
}

/** Whether a VMDK descriptor file in `dir` names `name` as one of its extents. */
function namedAsExtent(dir: string, name: string): boolean {
  return readdirSync(dir).some((d) => d !== name && d.endsWith('.vmdk') && statSync(join(dir, d)).size < 65536 && readFileSync(join(dir, d), 'latin1').includes(`"${name}"`));
}

/** check --output=json's status and counts, fragmentation left out. */
function checkVerdict(version: OracleVersion, dir: string, file: string): string {
  const r = runQemu(version, ['check', '-U', '--output=json', file], { cwd: dir, timeoutMs: 60_000 });
  let counts: Record<string, unknown> = {};
  try {
    counts = JSON.parse(r.stdout) as Record<string, unknown>;
  } catch {
    return `unreadable: ${r.status} ${r.stderr}`;
  }
  delete counts['fragmented-clusters'];
  return JSON.stringify({ status: r.status, ...counts });
}

function checkStatus(version: OracleVersion, dir: string, file: string): RunResult {
  return runQemu(version, ['check', '-U', file], { cwd: dir, timeoutMs: 60_000 });
}

async function runInstarStep(version: OracleVersion, args: string[], dir: string, cli: boolean): Promise<RunResult> {
  const globals = [`--qemu-version=${version}`];
  if (cli) return runInstar([...globals, ...args], { cwd: dir, env: { TZ: 'UTC' }, timeoutMs: 60_000 });
  return runInProcess(['--sandbox=none', ...globals, ...args], dir);
}

/**
 * GNU cp keeps a sparse file sparse (Node's copies write every byte: a raw disk resized to 1T
 * filled the disk once).
 */
function sparseCopy(from: string, to: string): void {
  const r = spawnSync('cp', ['--sparse=always', from, to]);
  if (r.status !== 0) throw new Error(`cp ${from} ${to}: ${r.stderr}`);
}

/** instar's copy replaced by the oracle's (after guest writes, edits, or an accepted difference). */
function resync(qdir: string, idir: string): void {
  rmSync(idir, { recursive: true, force: true });
  mkdirSync(idir);
  for (const f of readdirSync(qdir)) sparseCopy(join(qdir, f), join(idir, f));
}

/** Guest writes on the oracle's copy, then copied over instar's (VHDX/VMDK writes draw random IDs). */
function applyIo(version: OracleVersion, qdir: string, idir: string, state: ImageState, step: Extract<Step, { kind: 'qemu-io' }>): void {
  const commands = step.kill ? [...step.commands, 'sigraise 9'] : step.commands;
  if (commands.length === 0) return;
  spawnSync(oracle(version, 'qemu-io'), ['-f', state.format, ...commands.flatMap((c) => ['-c', c]), state.file], { cwd: qdir, timeout: 60_000 });
  resync(qdir, idir);
}

/**
 * One refcount of the oracle's copy changed by `delta` (16-bit refcounts only; others unchanged),
 * then copied over instar's: a leak (+1, on a cluster in use or a free one inside the file) or a
 * refcount below its references (-1, on a cluster in use). Returns what was done, for the log.
 */
function editRefcount(qdir: string, idir: string, file: string, step: Extract<Step, { kind: 'refcount' }>): string {
  // Positioned reads and one 2-byte write: the file may be a sparse one of many GiB (a whole
  // read failed past 2 GiB, and a whole write would fill its holes).
  const fd = openSync(join(qdir, file), 'r+');
  let edited: string;
  try {
    const length = fstatSync(fd).size;
    const at = (pos: number, n: number): Buffer => {
      const buf = Buffer.alloc(n);
      readSync(fd, buf, 0, n, pos);
      return buf;
    };
    const h = at(0, 104);
    if (length < 104 || h.readUInt32BE(0) !== 0x514649fb) return 'not qcow2';
    const order = h.readUInt32BE(4) >= 3 ? h.readUInt32BE(96) : 4;
    if (order !== 4) return 'refcounts not 16-bit';
    const cs = 2 ** h.readUInt32BE(20);
    const table = Number(h.readBigUInt64BE(48));
    const block = table + 8 <= length ? Number(at(table, 8).readBigUInt64BE(0) & ~511n) : 0;
    if (block === 0 || block + cs > length) return 'no first refcount block';
    const counts = at(block, cs);
    const clusters = Math.min(Math.floor(length / cs), cs / 2);
    const wanted = (c: number) => (step.delta > 0 ? true : counts.readUInt16BE(2 * c) > 0);
    const candidates = Array.from({ length: clusters }, (_, c) => c).filter(wanted);
    if (candidates.length === 0) return 'no cluster to edit';
    const c = candidates[step.pick % candidates.length];
    const value = counts.readUInt16BE(2 * c) + step.delta;
    if (value < 0 || value > 0xffff) return 'out of range';
    const bytes = Buffer.alloc(2);
    bytes.writeUInt16BE(value);
    writeSync(fd, bytes, 0, 2, block + 2 * c);
    edited = `cluster ${c} refcount ${value - step.delta} -> ${value} (byte ${block + 2 * c})`;
  } finally {
    closeSync(fd);
  }
  resync(qdir, idir);
  return edited;
}

/** Builds the case's files once (image + rebase targets) into `dir`; returns its recipe. */
function buildCaseFiles(seed: number, dir: string): { top: string; recipe: string; others: ImageState['others'] } {
  const rng = new Rng(seed);
  const built = buildImage(rng, dir, { maxSize: rng.chance(0.2) ? 512 * 1024 * 1024 : 64 * 1024 * 1024 });
  const others: ImageState['others'] = built.layers.slice(0, -1).map((l) => ({ file: l.file, format: l.format }));
  const targetDir = join(dir, '..', 'target');
  mkdirSync(targetDir, { recursive: true });
  const target = buildImage(rng, targetDir, { formats: ['qcow2', 'qcow2', 'raw', 'vmdk', 'vpc'], chainChance: 0, oddStates: false });
  const single = target.files.length === 1;
  if (single) {
    const name = `alt.${target.top.file.split('.').pop()}`;
    sparseCopy(join(targetDir, target.top.file), join(dir, name));
    others.push({ file: name, format: target.top.format });
  }
  const recipe = `${describeBuild(built, seed)}\n# rebase target${single ? '' : ' (not copied: more than one file)'}\n${target.recipe.join('\n')}`;
  return { top: built.top.file, recipe, others };
}

/** One seed: the same image and sequence of steps against each version's oracle. */
export async function runMutatingCase(seed: number, opts: MutatingOptions = {}): Promise<{ steps: number; findings: MutatingFinding[]; intended: IntendedDifference[] }> {
  const root = opts.dir ?? mkdtempSync(join(tmpdir(), `hunt-mutating-${seed}-`));
  const findings: MutatingFinding[] = [];
  const intended: IntendedDifference[] = [];
  let steps = 0;
  try {
    const src = join(root, 'src');
    mkdirSync(src);
    const { top, recipe, others } = buildCaseFiles(seed, src);
    for (const version of opts.versions ?? (['7.2', '10.0'] as const)) {
      const qdir = join(root, version, 'q');
      const idir = join(root, version, 'i');
      for (const d of [qdir, idir]) {
        mkdirSync(d, { recursive: true });
        for (const f of readdirSync(src)) if (statSync(join(src, f)).isFile()) sparseCopy(join(src, f), join(d, f));
      }
      const rng = new Rng(seed ^ 0x5bd1e995);
      const log: string[] = [recipe, `# twins: cp -a src q; cp -a src i; then, in each (qemu ${version}):`];
      let state = readState(version, qdir, top, others);
      let mustRepair = false;
      for (let n = 0; n < (opts.steps ?? 12) && state; n++) {
        // A refcount below its references is repaired first: what qemu writes over such an image
        // (it frees a cluster still in use) is not a behaviour to copy.
        const step: Step = mustRepair ? { kind: 'qemu-img', args: ['check', '-r', 'all', state.file] } : nextStep(rng, state);
        mustRepair = step.kind === 'refcount' && step.delta < 0;
        steps++;
        if (step.kind === 'refcount') {
          log.push(`# edited ${state.file}: ${editRefcount(qdir, idir, state.file, step)}`);
        } else if (step.kind === 'qemu-io') {
          applyIo(version, qdir, idir, state, step);
          log.push(`qemu-io-${version} -f ${state.format} ${shell([...step.commands, ...(step.kill ? ['sigraise 9'] : [])].flatMap((c) => ['-c', c]))} ${state.file}`);
        } else {
          const qemu = runQemu(version, step.args, { cwd: qdir, env: { TZ: 'UTC' }, timeoutMs: 60_000 });
          qemu.stderr = qemu.stderr.split(oracle(version)).join('qemu-img');
          // qemu cut short by the timeout (a 1-bit refcount order change can take minutes on this
          // loaded machine): nothing to compare, and the copies may differ from here on.
          if (qemu.signal === 'SIGTERM') {
            log.push(`qemu-img ${shell(step.args)}   # qemu timed out: sequence ended`);
            break;
          }
          let instar = await runInstarStep(version, step.args, idir, opts.cli === true);
          // commit -p: qemu's mirror job prints its steps as its timing goes (runs differ): compared without them.
          if (step.args[0] === 'commit') for (const r of [qemu, instar]) r.stdout = r.stdout.replace(PROGRESS, '');
          let quirk = '';
          if (!sameOutput(qemu, instar) && instar.status !== 0) {
            // A refusal (instar's refusals write nothing): where qemu's way is unsafe, --unsafe-quirks gives it.
            const unsafe = await runInstarStep(version, ['--unsafe-quirks', ...step.args], idir, opts.cli === true);
            if (sameOutput(qemu, unsafe)) {
              intended.push({ seed, version, step: n, command: `qemu-img ${shell(step.args)}`, refusal: instar.stderr.trim() });
              quirk = ' --unsafe-quirks';
              instar = unsafe;
            }
          }
          const command = `qemu-img ${shell(step.args)}`;
          const documented = quirk || sameOutput(qemu, instar) ? undefined : documentedRefusal(qemu, instar);
          if (documented) {
            // A documented refusal: qemu's copy (changed or not) is where the sequence goes on from.
            intended.push({ seed, version, step: n, command, refusal: instar.stderr.trim(), documented });
            log.push(`${command}   # instar refused (${documented}); qemu's copy taken over`);
            resync(qdir, idir);
            state = readState(version, qdir, top, others, state);
            continue;
          }
          const differs = (what: string, detail: string) => findings.push({ seed, version, step: n, command, what, detail, replay: log.join('\n') });
          // stderr first: the line a signature is made of (area.ts) is then the message.
          const out = (r: RunResult) => `${r.stderr}--- stdout\n${r.stdout}--- exit ${r.status}${r.signal ? ` (${r.signal})` : ''}\n`;
          if (!sameOutput(qemu, instar)) {
            differs('output', `qemu:\n${out(qemu)}\ninstar:\n${out(instar)}`);
            break;
          }
          let files = compareDirs(qdir, idir);
          let note = quirk ? '   # instar: refused by design, same with --unsafe-quirks' : '';
          // qemu's commit is a mirror job whose parallel requests allocate in an order its timing
          // decides (two qemu runs differ): there, the same disk content and a clean check will do,
          // and instar's copy is then replaced by qemu's so that the sequence goes on from one state.
          if (files && step.args[0] === 'commit' && qemu.status === 0 && sameContent(version, qdir, idir)) {
            note = `   # files differ (${files.split(':')[0]}): qemu's mirror layout is timing-dependent; same content, check clean`;
            resync(qdir, idir);
            files = undefined;
          }
          if (files) {
            differs('files', `${files}\n(both: ${out(qemu)})`);
            break;
          }
          log.push(`${command}${note}`);
          if (qemu.status === 0 && ['qcow2', 'qed', 'vmdk', 'vhdx', 'vdi'].includes(state.format)) {
            const ic = checkStatus(version, idir, state.file);
            const qc = checkStatus(version, qdir, state.file);
            if (ic.status !== qc.status || ic.stdout !== qc.stdout) {
              differs('check', `qemu's copy: ${out(qc)}\ninstar's copy: ${out(ic)}`);
              break;
            }
          }
        }
        state = readState(version, qdir, top, others, state);
      }
    }
  } finally {
    if (!opts.keep && opts.dir === undefined) rmSync(root, { recursive: true, force: true });
  }
  return { steps, findings, intended };
}

/** A finding as printed: the seed and command first, then both sides, then how to replay it. */
export function describeFinding(f: MutatingFinding): string {
  return `FINDING seed ${f.seed} qemu ${f.version} step ${f.step}: ${f.command} (${f.what})\n${f.detail}\n# replay:\n${f.replay}\n`;
}

const reported = new Set<string>();

/** The area scripts/hunt.ts runs: instar in-process (src/, so a rebuild mid-run changes nothing). */
export const area: HuntArea = {
  async runCase(seed: number, dir: string): Promise<CaseReport> {
    const r = await runMutatingCase(seed, { dir });
    for (const d of r.intended) {
      const key = d.refusal.replace(/'[^']*'/g, "'…'");
      const why = d.documented ?? 'same with --unsafe-quirks';
      if (!reported.has(key)) console.log(`(intended, ${why}) seed ${d.seed} qemu ${d.version}: ${d.command}\n  instar: ${d.refusal}`);
      reported.add(key);
    }
    const mismatches: Mismatch[] = r.findings.map((f) => ({
      command: f.command.replace(/^qemu-img /, ''),
      version: f.version,
      what: f.what === 'output' ? 'stderr' : 'file',
      qemu: f.what === 'output' ? f.detail.split('\ninstar:\n')[0].replace(/^qemu:\n/, '') : f.detail,
      instar: f.what === 'output' ? f.detail.split('\ninstar:\n')[1] ?? '' : '',
    }));
    return { recipe: r.findings.length > 0 ? [r.findings[0].replay] : [], commands: r.steps, mismatches };
  },
};
