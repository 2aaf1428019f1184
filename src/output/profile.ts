import { accessSync, constants, readFileSync, realpathSync, statSync } from 'node:fs';
import { spawn, spawnSync } from 'node:child_process';
import { delimiter, join } from 'node:path';

/**
 * A qemu-img version profile: what changes in output between versions (DESIGN.md §3).
 * Boundaries measured over qemu releases; 7.2 and 10.0 are verified against real binaries.
 */
export interface Profile {
  major: number;
  minor: number;
  /** "Child node '/file'" section and JSON `children` (8.0+). */
  childNodes: boolean;
  /** `dirty-flag` in info, `present` in map (6.1+). */
  dirtyFlag: boolean;
  /** map JSON `compressed` (8.2+). */
  mapCompressed: boolean;
  /** Snapshot table headers VM_SIZE / VM_CLOCK with underscores (9.0+). */
  snapshotUnderscores: boolean;
  /** VHD virtual size taken from current_size regardless of creator (10.0+). */
  vhdCurrentSize: boolean;
  /**
   * qemu-img's reworked option errors (10.0+; 7.2 verified old, 10.0 new): --output is checked while
   * options are parsed ("--output expects 'human' or 'json' not 'X'") and usage errors end in
   * "Try 'qemu-img CMD --help' for more info"; before, "--output must be used with human or json as
   * argument." came after the file name check and "Try 'qemu-img --help' for more information".
   */
  newUsageErrors: boolean;
  /** LUKS format-specific info has `detached-header` (9.0+). */
  luksDetachedHeader: boolean;
}

export const NEWEST = '10.0';

export function profileFor(version: string): Profile {
  const m = /^(\d+)\.(\d+)/.exec(version);
  if (!m) throw new Error(`invalid qemu version '${version}'`);
  const major = Number(m[1]);
  const minor = Number(m[2]);
  const atLeast = (a: number, b: number) => major > a || (major === a && minor >= b);
  return {
    major,
    minor,
    childNodes: atLeast(8, 0),
    dirtyFlag: atLeast(6, 1),
    mapCompressed: atLeast(8, 2),
    snapshotUnderscores: atLeast(9, 0),
    vhdCurrentSize: atLeast(10, 0),
    newUsageErrors: atLeast(10, 0),
    luksDetachedHeader: atLeast(9, 0),
  };
}

/** An unusable version given by the user (flag or environment): the CLI prints it and exits 1. */
export class ProfileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProfileError';
  }
}

/** Normalises 'X.Y' or 'X.Y.Z' to 'X.Y'; anything else is a ProfileError naming `origin`. */
export function parseQemuVersion(text: string, origin: string): string {
  const m = /^(\d{1,3})\.(\d{1,3})(?:\.\d{1,3})?$/.exec(text.trim());
  if (!m || Number(m[1]) < 1) {
    throw new ProfileError(`invalid qemu-img version '${text}' in ${origin} (expected MAJOR.MINOR, e.g. 7.2 or 10.0)`);
  }
  return `${Number(m[1])}.${Number(m[2])}`;
}

/** Set in the environment of a probed qemu-img: an instar that sees it refuses to answer. */
export const PROBE_MARKER = 'INSTAR_PROFILE_PROBE';

export type ProfileSource = 'flag' | 'env' | 'installed' | 'default';

export interface ResolveProfileInput {
  /** --qemu-version, when given. */
  flag?: string;
  env: NodeJS.ProcessEnv;
  /** Finds the installed qemu-img's version ('X.Y'); defaults to probing PATH. */
  probe?: (env: NodeJS.ProcessEnv) => string | undefined;
}

/**
 * The profile to emulate: --qemu-version, else INSTAR_QEMU_VERSION, else the qemu-img installed
 * on PATH, else the newest. Nothing is cached on disk: the probe runs once per invocation.
 */
export function resolveQemuVersion(input: ResolveProfileInput): { version: string; source: ProfileSource } {
  if (input.flag !== undefined) return { version: parseQemuVersion(input.flag, '--qemu-version'), source: 'flag' };
  const fromEnv = input.env.INSTAR_QEMU_VERSION;
  if (fromEnv !== undefined && fromEnv !== '') {
    return { version: parseQemuVersion(fromEnv, 'INSTAR_QEMU_VERSION'), source: 'env' };
  }
  const installed = (input.probe ?? probeInstalledQemuImg)(input.env);
  if (installed) return { version: installed, source: 'installed' };
  return { version: NEWEST, source: 'default' };
}

/**
 * Runs `qemu-img --version` for the first real qemu-img on PATH. instar itself may be on PATH
 * under that name (the dist/alias symlink, an npm bin shim): a qemu-img that resolves to a .js
 * file or to the running script is skipped, and the marker in the probe's environment makes any
 * other instar decline (it exits without printing), so the probe moves on.
 */
export function probeInstalledQemuImg(env: NodeJS.ProcessEnv): string | undefined {
  for (const candidate of qemuImgCandidates(env)) {
    const compiledIn = versionInBinary(candidate);
    if (compiledIn) return compiledIn;
    const r = spawnSync(candidate, ['--version'], { env: probeEnv(env), encoding: 'utf8', timeout: PROBE_TIMEOUT_MS, stdio: ['ignore', 'pipe', 'ignore'] });
    const version = versionOf(r.stdout ?? '');
    if (version) return version;
  }
  return undefined;
}

/**
 * The same probe without blocking: the CLI starts it first thing, so the child runs while the
 * command's code loads (it would otherwise add its whole run time to every call).
 */
export async function probeInstalledQemuImgAsync(env: NodeJS.ProcessEnv): Promise<string | undefined> {
  for (const candidate of qemuImgCandidates(env)) {
    const version = versionInBinary(candidate) ?? versionOf(await stdoutOf(candidate, env));
    if (version) return version;
  }
  return undefined;
}

/** resolveQemuVersion with the installed version probed asynchronously (and only when needed). */
export async function resolveQemuVersionAsync(input: Omit<ResolveProfileInput, 'probe'>): Promise<{ version: string; source: ProfileSource }> {
  let installed: string | undefined;
  const needsProbe = input.flag === undefined && !input.env.INSTAR_QEMU_VERSION;
  if (needsProbe) installed = await probeInstalledQemuImgAsync(input.env);
  return resolveQemuVersion({ ...input, probe: () => installed });
}

const PROBE_TIMEOUT_MS = 5000;

function probeEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return { ...env, [PROBE_MARKER]: '1' };
}

const ELF_MAGIC = 0x7f454c46;
const MAX_BINARY_BYTES = 64 * 1024 * 1024;
const VERSION_TEXT = /^qemu-img version (\d+)\.(\d+)\.\d+[ \n]/;

/**
 * `qemu-img --version` prints a string compiled into the binary ("qemu-img version X.Y.Z …"):
 * reading it from the ELF file gives the same answer without starting a process, which would
 * compete for the CPU with the sandboxed guest starting at the same time. Anything unexpected
 * (not ELF, too big, no string or two different ones) falls back to running it.
 */
function versionInBinary(file: string): string | undefined {
  let bytes: Buffer;
  try {
    if (statSync(file).size > MAX_BINARY_BYTES) return undefined;
    bytes = readFileSync(file);
  } catch {
    return undefined;
  }
  if (bytes.length < 4 || bytes.readUInt32BE(0) !== ELF_MAGIC) return undefined;
  let found: string | undefined;
  for (let at = bytes.indexOf('qemu-img version '); at >= 0; at = bytes.indexOf('qemu-img version ', at + 1)) {
    const m = VERSION_TEXT.exec(bytes.toString('latin1', at, at + 40));
    if (!m) continue;
    const version = `${Number(m[1])}.${Number(m[2])}`;
    if (found !== undefined && found !== version) return undefined;
    found = version;
  }
  return found;
}

function versionOf(stdout: string): string | undefined {
  const m = /^qemu-img version (\d+)\.(\d+)/m.exec(stdout);
  return m && !/\(instar /.test(stdout) ? `${Number(m[1])}.${Number(m[2])}` : undefined;
}

function stdoutOf(file: string, env: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolve) => {
    let text = '';
    const child = spawn(file, ['--version'], { env: probeEnv(env), stdio: ['ignore', 'pipe', 'ignore'], timeout: PROBE_TIMEOUT_MS });
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      if (text.length < 4096) text += chunk;
    });
    child.on('error', () => resolve(''));
    child.on('close', () => resolve(text));
  });
}

/** Executable qemu-img files on PATH that are not instar itself (see probeInstalledQemuImg). */
function* qemuImgCandidates(env: NodeJS.ProcessEnv): Generator<string> {
  const self = realPathOrEmpty(process.argv[1] ?? '');
  for (const dir of (env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue;
    const candidate = join(dir, 'qemu-img');
    const real = realPathOrEmpty(candidate);
    if (real === '' || real.endsWith('.js') || real === self) continue;
    try {
      accessSync(real, constants.X_OK);
    } catch {
      continue;
    }
    yield candidate;
  }
}

function realPathOrEmpty(path: string): string {
  try {
    return path === '' ? '' : realpathSync(path);
  } catch {
    return '';
  }
}
