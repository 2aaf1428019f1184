// Hunt area "other-formats": info, map, compare, check, measure and convert -O raw|qcow2 on the
// images other-images.ts makes (vdi, qed, qcow v1, parallels, LUKS1, qcow2+LUKS, raw-looking files
// with an MBR, a GPT or ISO 9660 descriptors), each through both oracles and instar. Encrypted
// images are named through --image-opts with the right secret, and now and then a wrong one, none
// at all, or a missing secret object (qemu's wording and exit code). convert runs in a directory
// per tool (the inputs hard-linked in) and the outputs are compared byte for byte (VDI UUIDs
// masked; compressed targets by content).
// With OSLO_UTILS set to a directory holding oslo.utils' oslo_utils package (format_inspector.py,
// _luks.py, units.py; _i18n may be a stub), each case also runs instar's inspect() on the image
// against oslo's detect_file_format() + safety_check(): instar may refuse what oslo passes (its
// documented strictness, test/inspect/oslo-verdicts.ts), never pass what oslo refuses.
import { linkSync, mkdirSync, statSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { inspect } from '../../../src/inspect/inspect.ts';
import { join } from 'node:path';
import { Rng } from '../prng.ts';
import { VERSIONS, type OracleVersion } from '../../helpers/oracles.ts';
import { runInstarCli } from '../diff-tools.ts';
import { compareRun, runQemu, type CaseReport, type HuntArea, type Mismatch } from './area.ts';
import { compareBytes, compareContent, filesIn } from './outputs.ts';
import { buildOther, PASSWORD, SECRET_OBJECT, type OtherImage } from './other-images.ts';

const MiB = 1024 * 1024;

/** Debian's qemu 7.2 announces missing dmg modules on every dmg open; instar does not (a documented
 *  difference: test/formats/dmg/dmg.test.ts). */
const withoutDmgModules = (text: string): string => text.split('\n').filter((l) => !l.startsWith('qemu: module block-block-dmg-')).join('\n');

interface Named {
  /** Arguments that name the image (with their --object, if any). */
  args: string[];
  /** Through --image-opts (compare then needs it for both). */
  opts: boolean;
  /** instar needs --unsafe-quirks to read it as qemu does (probed plain raw: qemu's fallback). */
  quirks: boolean;
}

/** How a command names the image: its format given or probed; encrypted ones with some secret. */
function nameImage(rng: Rng, img: OtherImage, forOpts = false): Named {
  if (img.encrypted) {
    const key = img.driver === 'luks' ? 'key-secret' : 'encrypt.key-secret';
    const secret = rng.chance(0.85) ? SECRET_OBJECT : rng.pick([`secret,id=sec0,data=${PASSWORD}x`, `secret,id=other,data=${PASSWORD}`]);
    const kind = rng.below(20);
    if (kind === 0 && !forOpts) return { args: ['-f', img.driver, img.file], opts: false, quirks: false };
    if (kind === 1) return { args: ['--image-opts', `driver=${img.driver},${key}=sec0,file.filename=${img.file}`], opts: true, quirks: false };
    if (kind === 2) return { args: ['--object', secret, '--image-opts', `driver=${img.driver},file.filename=${img.file}`], opts: true, quirks: false };
    const driver = rng.chance(0.15) ? '' : `driver=${img.driver},`;
    return { args: ['--object', secret, '--image-opts', `${driver}${key}=sec0,file.filename=${img.file}`], opts: true, quirks: false };
  }
  if (forOpts || rng.chance(0.1)) return { args: ['--image-opts', `driver=${img.driver},file.filename=${img.file}`], opts: true, quirks: false };
  if (rng.chance(0.5)) return { args: ['-f', rng.chance(0.08) ? 'raw' : img.driver, img.file], opts: false, quirks: false };
  // Probed: the MBR/GPT ones instar must take as raw by itself; plain raw and ISO only by qemu's
  // fallback (--unsafe-quirks; ISO is "iso" to instar otherwise, as README says).
  return { args: [img.file], opts: false, quirks: img.kind === 'plain' || img.kind === 'iso' };
}

const output = (rng: Rng): string[] => (rng.chance(0.5) ? ['--output=json'] : rng.chance(0.2) ? ['--output=human'] : []);

/** Splits a Named into (objects, flags, file) so that two can share one --image-opts. */
function parts(n: Named): { objects: string[]; rest: string[] } {
  const objects: string[] = [];
  const rest: string[] = [];
  for (let i = 0; i < n.args.length; i++) {
    if (n.args[i] === '--object') objects.push('--object', n.args[++i]);
    else if (n.args[i] !== '--image-opts') rest.push(n.args[i]);
  }
  return { objects, rest };
}

function command(rng: Rng, img: OtherImage, copies: string[]): { args: string[]; quirks: boolean; convert?: string } {
  const kind = rng.below(12);
  const n = nameImage(rng, img);
  // A qcow v1 header has no backing format: a raw base is probed, which qemu's raw fallback
  // takes and instar refuses by default (README: no raw fallback).
  if (img.driver === 'qcow' && img.backing.some((b) => b.driver === 'raw')) n.quirks = true;
  const { objects, rest } = parts(n);
  const io = n.opts ? ['--image-opts'] : [];
  if (kind < 2) return { args: ['info', ...objects, ...output(rng), ...(rng.chance(0.4) ? ['--backing-chain'] : []), ...(rng.chance(0.15) ? ['-U'] : []), ...io, ...rest], quirks: n.quirks };
  if (kind < 4) {
    const a = ['map', ...objects, ...output(rng)];
    const pos = () => String(rng.pick([0, img.size, Math.floor(rng.below(img.size + 1) / 512) * 512, rng.below(img.size + 1), img.size + rng.below(MiB)]));
    if (rng.chance(0.3)) a.push(`--start-offset=${pos()}`);
    if (rng.chance(0.3)) a.push(`--max-length=${pos()}`);
    return { args: [...a, ...io, ...rest], quirks: n.quirks };
  }
  if (kind < 6) return { args: ['check', ...objects, ...output(rng), ...(rng.chance(0.1) ? ['-q'] : []), ...io, ...rest], quirks: n.quirks };
  if (kind < 8) {
    // The partner: a copy made by qemu (raw or qcow2), the backing file, or the image itself.
    const partner = rng.pick([...copies, ...img.backing.map((b) => b.file), img.file]);
    const pdriver = partner === img.file ? img.driver : partner.endsWith('.qcow2') ? 'qcow2' : partner.endsWith('.qed') ? 'qed' : 'raw';
    const swap = rng.chance(0.3);
    const flags = [...(rng.chance(0.4) ? ['-s'] : []), ...(rng.chance(0.2) ? ['-q'] : [])];
    if (n.opts) {
      const other = partner === img.file ? rest[0] : `driver=${pdriver},file.filename=${partner}`;
      const files = swap ? [other, rest[0]] : [rest[0], other];
      return { args: ['compare', ...objects, ...flags, '--image-opts', ...files], quirks: n.quirks };
    }
    const mine = rest.length > 1 ? { f: rest[1], file: rest[2] } : { f: undefined, file: rest[0] };
    const theirs = { f: rng.chance(0.6) ? pdriver : undefined, file: partner };
    const [a, b] = swap ? [theirs, mine] : [mine, theirs];
    return { args: ['compare', ...flags, ...(a.f ? ['-f', a.f] : []), ...(b.f ? ['-F', b.f] : []), a.file, b.file], quirks: n.quirks || !a.f || !b.f };
  }
  if (kind < 9) {
    const target = rng.pick(['raw', 'qcow2', 'qcow2', 'luks']);
    const a = ['measure', ...objects, ...output(rng), '-O', target];
    if (target === 'qcow2' && rng.chance(0.4)) a.push('-o', `cluster_size=${rng.pick([4096, 65536, 2 * MiB])}`);
    if (target === 'luks') a.push(...(objects.length === 0 ? ['--object', SECRET_OBJECT] : []), '-o', 'key-secret=sec0');
    return { args: [...a, ...io, ...rest], quirks: n.quirks };
  }
  const target = rng.pick(['raw', 'raw', 'qcow2', 'qcow2']);
  const out = target === 'raw' ? 'out.img' : 'out.qcow2';
  const o: string[] = [];
  if (target === 'qcow2') {
    if (rng.chance(0.3)) o.push(`cluster_size=${rng.pick([512, 4096, 65536, 2 * MiB])}`);
    if (rng.chance(0.2)) o.push('compat=0.10');
    if (rng.chance(0.15)) o.push(`preallocation=${rng.pick(['metadata', 'off'])}`);
  }
  const flags = [...(rng.chance(0.2) ? ['-S', rng.pick(['0', '4k', '64k'])] : []), ...(target === 'qcow2' && rng.chance(0.15) ? ['-c'] : []), ...(rng.chance(0.15) ? ['-W'] : [])];
  return { args: ['convert', ...objects, ...flags, ...io, ...rest, '-O', target, ...(o.length > 0 ? ['-o', o.join(',')] : []), out], quirks: n.quirks, convert: target };
}

/** Runs a convert in a directory per tool (inputs hard-linked) and compares status, text, files. */
async function compareConvert(dir: string, files: string[], args: string[], version: OracleVersion, quirks: boolean, target: string, tag: string): Promise<Mismatch[]> {
  const dirs = ['qemu', 'instar'].map((who) => {
    const d = join(dir, `${tag}-${who}-${version}`);
    mkdirSync(d);
    for (const f of files) linkSync(join(dir, f), join(d, f));
    return d;
  });
  const mode = { version, sandboxed: false, unsafeQuirks: quirks };
  const [qemu, instar] = await Promise.all([runQemu(version, args, dirs[0]), runInstarCli(args, dirs[1], mode)]);
  const command = args.join(' ');
  const m: Mismatch[] = [];
  if (instar.timedOut) return [{ command, version, what: 'hang', qemu: `status ${qemu.status}`, instar: 'timed out' }];
  if (qemu.stdout !== instar.stdout) m.push({ command, version, what: 'stdout', qemu: qemu.stdout, instar: instar.stdout });
  if (withoutDmgModules(qemu.stderr) !== instar.stderr) m.push({ command, version, what: 'stderr', qemu: qemu.stderr, instar: instar.stderr });
  if (qemu.status !== instar.status) m.push({ command, version, what: 'status', qemu: String(qemu.status), instar: String(instar.status) });
  if (qemu.status === 0 && instar.status === 0) {
    // -W: qemu's out-of-order writes allocate clusters in a different order from run to run.
    const problems = args.includes('-c') || (args.includes('-W') && target !== 'raw') ? await compareContent(dirs[1], dirs[0], target) : compareBytes(dirs[1], dirs[0], target);
    if (problems.length > 0) m.push({ command, version, what: 'file', qemu: '', instar: problems.join('\n') });
  }
  return m;
}

const OSLO_SCRIPT = `
import json, sys
from oslo_utils.imageutils import format_inspector as fi
for path in sys.argv[1:]:
    try:
        i = fi.detect_file_format(path)
    except fi.ImageFormatError as e:
        print(json.dumps({"safe": False, "format": "multiple", "why": str(e)})); continue
    try:
        i.safety_check(); failures = []
    except fi.SafetyCheckFailed as e:
        failures = sorted(e.failures.keys())
    print(json.dumps({"safe": not failures, "format": i.NAME, "size": i.virtual_size, "failures": failures}))
`;

/** oslo.utils' verdict against instar's inspect() on the image: a mismatch only where instar is laxer. */
async function osloAgreement(dir: string, img: OtherImage): Promise<Mismatch[]> {
  const oslo = process.env.OSLO_UTILS;
  if (oslo === undefined) return [];
  const r = spawnSync('python3', ['-c', OSLO_SCRIPT, img.file], { cwd: dir, encoding: 'utf8', env: { ...process.env, PYTHONPATH: oslo } });
  if (r.status !== 0) return [{ command: `(oslo ${img.file})`, version: '10.0', what: 'status', qemu: r.stderr, instar: '' }];
  const verdict = JSON.parse(r.stdout) as { safe: boolean; format: string; failures?: string[] };
  const report = await inspect(join(dir, img.file));
  const failed = report.checks.filter((c) => !c.passed).map((c) => c.name).join(',');
  const line = (safe: boolean, format: string, why: string) => `safe=${safe} format=${format} ${why}`;
  if (verdict.safe && report.safe) return [];
  if (!verdict.safe && !report.safe) return [];
  // Laxer (oslo refuses, instar passes) is a finding; stricter is printed under HUNT_VERBOSE.
  if (!verdict.safe) return [{ command: `(inspect ${img.kind})`, version: '10.0', what: 'stdout', qemu: line(false, verdict.format, (verdict.failures ?? []).join(',')), instar: line(true, report.format, '') }];
  if (process.env.HUNT_VERBOSE) console.log(`  stricter than oslo on ${img.kind}: ${failed}`);
  return [];
}

async function runCase(seed: number, dir: string): Promise<CaseReport> {
  const rng = new Rng(seed);
  const img = buildOther(rng, dir);
  const recipe = [`# seed ${seed}`, ...img.recipe];
  // compare's partners: qemu's own copies of the disk, raw and qcow2.
  const copies: string[] = [];
  for (const [fmt, file] of [['raw', 'copy.raw'], ['qcow2', 'copy.qcow2']] as const) {
    if (!rng.chance(0.5)) continue;
    const src = img.encrypted ? ['--object', SECRET_OBJECT, '--image-opts', `driver=${img.driver},${img.driver === 'luks' ? 'key-secret' : 'encrypt.key-secret'}=sec0,file.filename=${img.file}`] : ['-f', img.driver, img.file];
    const args = ['convert', ...src, '-O', fmt, file];
    recipe.push(`qemu-img-${img.builder} ${args.join(' ')}`);
    if ((await runQemu(img.builder, args, dir)).status === 0) copies.push(file);
  }
  const files = filesIn(dir).filter((f) => statSync(join(dir, f)).isFile());
  const mismatches: Mismatch[] = [];
  let commands = 0;
  let qemuFailed = 0;
  for (let i = 0, n = 4 + rng.below(5); i < n; i++) {
    const c = command(rng, img, copies);
    for (const version of VERSIONS) {
      commands++;
      if (c.convert !== undefined) {
        const m = await compareConvert(dir, files, c.args, version, c.quirks, c.convert, `c${i}`);
        mismatches.push(...m);
        continue;
      }
      const run = await compareRun(c.args, dir, version, { unsafeQuirks: c.quirks, sandboxed: rng.chance(0.1), mask: withoutDmgModules });
      // qemu 7.2 times its PBKDF2 (measure -O luks) and fails now and then on a busy machine.
      if (!/Unable to get accurate CPU usage/.test(run.qemu.stderr)) mismatches.push(...run.mismatches);
      if (run.qemu.status !== 0 && !(c.args[0] === 'compare' && run.qemu.status === 1)) {
        qemuFailed++;
        if (process.env.HUNT_VERBOSE) console.log(`  qemu ${version} failed: ${c.args.join(' ')}: ${run.qemu.stderr.trim()}`);
      }
    }
  }
  mismatches.push(...(await osloAgreement(dir, img)));
  // qemuFailed: counted by the runner where area.ts has the field (a variable, so that this
  // compiles with and without it).
  const report = { recipe, commands, qemuFailed, mismatches };
  return report;
}

export const area: HuntArea = { runCase };
