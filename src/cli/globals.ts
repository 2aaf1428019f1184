/**
 * instar's own options, accepted before or after any subcommand. They match by exact name only,
 * so they never make one of qemu-img's abbreviations ambiguous (`--d` stays `--disable` in bitmap).
 */
import { resolve } from 'node:path';
import type { GlobalOptions } from './types.ts';

export const GLOBAL_OPTIONS = [
  { name: 'sandbox', hasArg: 1 },
  { name: 'debug', hasArg: 0 },
  { name: 'qemu-version', hasArg: 1 },
  { name: 'allow-path', hasArg: 1 },
  { name: 'unsafe-quirks', hasArg: 0 },
  { name: 'ignore-quirks', hasArg: 0 },
] as const satisfies readonly { name: string; hasArg: 0 | 1 }[];

/** What the command line said, before the environment and validation are applied. */
export interface RawGlobals {
  sandbox?: string;
  debug: boolean;
  qemuVersion?: string;
  allowPaths: string[];
  unsafeQuirks: boolean;
  ignoreQuirks: boolean;
}

export function emptyRawGlobals(): RawGlobals {
  return { debug: false, allowPaths: [], unsafeQuirks: false, ignoreQuirks: false };
}

/** Records one instar option as the parser met it (the last --sandbox / --qemu-version wins). */
export function recordGlobal(raw: RawGlobals, name: string, arg: string | undefined): void {
  switch (name) {
    case 'sandbox': raw.sandbox = arg; break;
    case 'debug': raw.debug = true; break;
    case 'qemu-version': raw.qemuVersion = arg; break;
    case 'allow-path': raw.allowPaths.push(arg ?? ''); break;
    case 'unsafe-quirks': raw.unsafeQuirks = true; break;
    case 'ignore-quirks': raw.ignoreQuirks = true; break;
  }
}

/**
 * The profile has to be known before the subcommand's table is chosen, so --qemu-version is
 * looked up lexically first (exact spellings, up to `--`); the real parse records it again.
 */
export function prescanQemuVersion(args: readonly string[]): string | undefined {
  let found: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '--') break;
    if (a === '--qemu-version' && i + 1 < args.length) found = args[++i];
    else if (a.startsWith('--qemu-version=')) found = a.slice('--qemu-version='.length);
  }
  return found;
}

export class GlobalOptionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'GlobalOptionError';
  }
}

const SANDBOX_MODES = ['auto', 'strict', 'none'] as const;

/** Applies INSTAR_SANDBOX and INSTAR_ALLOW_PATH and validates; `qemuVersion` is resolved elsewhere. */
export function finishGlobals(raw: RawGlobals, env: NodeJS.ProcessEnv, cwd: string, qemuVersion: string): GlobalOptions {
  const sandboxText = raw.sandbox ?? (env.INSTAR_SANDBOX || undefined);
  let sandbox: GlobalOptions['sandbox'];
  if (sandboxText !== undefined) {
    const origin = raw.sandbox !== undefined ? '--sandbox' : 'INSTAR_SANDBOX';
    if (!(SANDBOX_MODES as readonly string[]).includes(sandboxText)) {
      throw new GlobalOptionError(`invalid ${origin} value '${sandboxText}' (expected auto, strict or none)`);
    }
    sandbox = sandboxText as GlobalOptions['sandbox'];
  }
  const fromEnv = (env.INSTAR_ALLOW_PATH ?? '').split(':');
  const allowPaths = [...fromEnv, ...raw.allowPaths].filter((p) => p !== '').map((p) => resolve(cwd, p));
  if (raw.allowPaths.some((p) => p === '')) throw new GlobalOptionError('--allow-path needs a directory');
  return {
    sandbox,
    debug: raw.debug,
    qemuVersion,
    allowPaths: [...new Set(allowPaths)],
    unsafeQuirks: raw.unsafeQuirks,
    ignoreQuirks: raw.ignoreQuirks,
  };
}
