// Samples the peak resident set (VmHWM) of the sandboxed guest processes of running CLI runs.
// rusage cannot give it: inside bwrap's PID namespace the guest is reaped by bwrap's init and
// its maximum RSS never reaches the host. VmHWM is a high-water mark, so any sample taken while
// the guest lives is its peak so far; a guest that grows only in its last few milliseconds can be
// under-reported, which is why the guest also runs under prlimit --data (1 GiB), where any
// overrun ends the run with "memory limit exceeded" (and the suite fails on that message).
import { readdirSync, readFileSync } from 'node:fs';

const roots = new Map<number, { peakKiB: number }>();
let timer: NodeJS.Timeout | undefined;

function read(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

function sample(): void {
  const parent = new Map<number, number>();
  const guests: number[] = [];
  // Descendants were created after their run's root: older processes need no look (pids grow;
  // a wrap-around only costs a sample).
  const oldest = Math.min(...roots.keys());
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) < oldest) continue;
    const stat = read(`/proc/${name}/stat`);
    if (!stat) continue;
    // pid (comm) state ppid …; comm may hold spaces and parentheses: split after the last ')'.
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    parent.set(Number(name), ppid);
    if (stat.includes('(node)') && /guest(-loader)?\.cjs|guest\.blob/.test(read(`/proc/${name}/cmdline`) ?? '')) guests.push(Number(name));
  }
  for (const pid of guests) {
    let root = pid;
    for (let hops = 0; hops < 64 && !roots.has(root) && root > 1; hops++) root = parent.get(root) ?? 1;
    const run = roots.get(root);
    if (!run) continue;
    const hwm = /VmHWM:\s+(\d+) kB/.exec(read(`/proc/${pid}/status`) ?? '');
    if (hwm) run.peakKiB = Math.max(run.peakKiB, Number(hwm[1]));
  }
}

/** Starts sampling the guests below `rootPid`; the returned function stops and gives the peak (KiB, 0 if never seen). */
export function watchGuests(rootPid: number): () => number {
  const run = { peakKiB: 0 };
  roots.set(rootPid, run);
  timer ??= setInterval(sample, 20);
  return () => {
    roots.delete(rootPid);
    if (roots.size === 0 && timer) {
      clearInterval(timer);
      timer = undefined;
    }
    return run.peakKiB;
  };
}
