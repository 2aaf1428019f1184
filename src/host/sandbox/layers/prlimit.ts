// Layer 2: kernel resource limits, set by util-linux prlimit, which then execs the rest of
// the command line (so the limits are inherited by bwrap and the guest).
import { accessSync, constants } from 'node:fs';
import type { SandboxLimits } from '../limits.ts';

export const PRLIMIT_CANDIDATES = ['/usr/bin/prlimit', '/bin/prlimit'];

export function findExecutable(candidates: string[]): string | undefined {
  for (const path of candidates) {
    try {
      accessSync(path, constants.X_OK);
      return path;
    } catch {
      // try the next one
    }
  }
  return undefined;
}

/** prlimit's arguments, up to and including the `--` before the wrapped command. */
export function prlimitArgs(limits: SandboxLimits): string[] {
  return [
    // Never --as: V8 reserves address space far beyond what it uses, and WebAssembly breaks.
    `--data=${limits.memoryBytes}`,
    // Soft < hard so that SIGXCPU arrives first and the host can name the cause.
    `--cpu=${limits.cpuSeconds}:${limits.cpuSeconds + 1}`,
    `--fsize=${limits.outputBytes}`,
    `--nofile=${limits.openFiles}`,
    '--core=0',
    '--',
  ];
}
