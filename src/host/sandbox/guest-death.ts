// Turning a guest that ended without a clean result into one line for the user. Under bwrap
// the exit status is bwrap's, which reports a signal death as 128 + the signal number.
import { constants } from 'node:os';

const SIG = constants.signals;

function signalOf(code: number | null, signal: NodeJS.Signals | null): number | undefined {
  if (signal) return SIG[signal];
  if (code !== null && code > 128 && code < 128 + 65) return code - 128;
  return undefined;
}

export function deathReason(code: number | null, signal: NodeJS.Signals | null, stderr: string, hadResult: boolean): string {
  // V8 prints this and aborts when the JS heap (--max-old-space-size) is exhausted.
  if (/heap out of memory|Reached heap limit|allocation failed - process out of memory/i.test(stderr)) return 'guest process killed: memory limit exceeded';
  const sig = signalOf(code, signal);
  if (sig === SIG.SIGXCPU) return 'guest process killed: CPU time limit exceeded';
  if (sig === SIG.SIGXFSZ) return 'guest process killed: output size limit exceeded';
  if (sig === SIG.SIGSYS) return 'guest process killed: forbidden system call';
  if (sig === SIG.SIGABRT || sig === SIG.SIGSEGV || sig === SIG.SIGBUS) return 'guest process killed: crashed (possibly memory limit exceeded)';
  if (sig === SIG.SIGKILL) return 'guest process killed: resource limit exceeded';
  if (sig !== undefined) return `guest process killed by signal ${sig}`;
  if (/^bwrap: /m.test(stderr)) return `sandbox failed to start: ${stderr.split('\n').find((l) => l.startsWith('bwrap: '))!.slice(7).replace(/[^\x20-\x7e]/g, '?')}`;
  if (hadResult) return `guest process ended with exit status ${code} after its result`;
  return `guest process ended without a result (exit status ${code})`;
}
