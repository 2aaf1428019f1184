// The files a CLI run may name in a system call: the image's own directory tree, and the
// runtime's own files (node and its libraries, the built bundles, the sandbox's tools, procfs
// entries of the process itself). Every traced path outside this explicit list is a bypass.
import { realpathSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { ROOT } from '../helpers/oracles.ts';
import type { TracedCall } from './traced-run.ts';
import { resolvedPath } from '../paths/strace.ts';

/** Directory trees the runtime reads from (libraries, bundles, the sandbox's new root). */
const RUNTIME_TREES = [
  '/usr/lib/x86_64-linux-gnu', '/lib/x86_64-linux-gnu', '/lib64', '/usr/lib64',
  join(ROOT, 'dist'),
  // The host's FFI for lseek(SEEK_DATA) (src/host/libc.ts), loaded for any input with blocks allocated.
  join(ROOT, 'node_modules', 'koffi'),
  // bwrap builds the guest's root in a tmpfs it mounts at /newroot and pivots away from /oldroot.
  '/newroot', '/oldroot',
  // Inside the sandbox: the guest bundle as bwrap binds it.
  '/instar',
  // libuv and V8 size themselves from these.
  '/sys/fs/cgroup', '/sys/devices/system/cpu', '/sys/devices/system/node', '/dev/pts',
  // bwrap mounts a tmpfs on /tmp inside its own mount namespace and builds the new root there.
  '/tmp/newroot', '/tmp/oldroot',
];

/** Single files of the runtime. */
const RUNTIME_FILES = [
  process.execPath, '/usr/bin/node', '/usr/bin/time', '/usr/bin/prlimit', '/usr/bin/bwrap',
  '/etc/ld.so.cache', '/etc/ld.so.preload', '/etc/localtime', '/etc/ssl/openssl.cnf', '/usr/lib/ssl/openssl.cnf',
  '/etc/nsswitch.conf', '/etc/gnutls/config', join(ROOT, 'package.json'),
  // bwrap (libselinux) checks whether SELinux and user namespaces are on.
  '/sys/fs/selinux', '/selinux', '/proc/filesystems', '/etc/selinux/config', '/sys/module/user_namespace/parameters/enable',
  '/dev/null', '/dev/urandom', '/dev/random', '/dev/tty', '/dev/ptmx', '/dev/full',
  '/proc/meminfo', '/proc/cpuinfo', '/proc/stat', '/proc/sys/kernel/cap_last_cap', '/proc/sys/kernel/overflowuid',
  '/proc/sys/kernel/overflowgid', '/proc/sys/user/max_user_namespaces', '/proc/sys/vm/overcommit_memory',
  '/sys/kernel/mm/transparent_hugepage/enabled', '/sys/kernel/mm/transparent_hugepage/shmem_enabled',
  '/proc', '/proc/self', '/proc/self/fd', '/proc/thread-self',
];

/**
 * The process's own procfs directory, and entries of it that the runtime reads (never
 * `environ`). The directory alone: bwrap's --ro-bind-fd resolves /proc/self/fd/N, a readlink of
 * each step (/proc/<its pid> included).
 */
const OWN_PROC = /^\/proc\/(self|thread-self|\d+)((\/task\/\d+)?\/(maps|smaps|status|stat|statm|cgroup|mountinfo|mounts|limits|exe|fd(\/\d+)?|uid_map|gid_map|setgroups|ns\/\w+|cmdline|comm|auxv|attr\/current|oom_score_adj|fdinfo(\/\d+)?))?$/;

/** Paths relative to a directory fd that bwrap uses while setting up (relative to its /proc fd). */
const BWRAP_RELATIVE = /^(\.|oldroot|newroot|self|cgroup|ipc|mnt|net|pid|uts|user|time|uid_map|gid_map|setgroups|sys\/user\/max_user_namespaces|\d+\/ns|(self|\d+)\/(mountinfo|fd|uid_map|gid_map|setgroups|ns(\/\w+)?))$/;

/** Where the runs' GNU time output files are (os.tmpdir() reads the environment: once, not per call). */
const TIME_OUTPUT_PREFIX = join(tmpdir(), 'instar-adv-');

/** Sources of bwrap's mounts that are not paths. */
const MOUNT_SOURCES = new Set(['tmpfs', 'none', 'proc', 'devpts', 'mqueue', 'sysfs']);

function realOr(p: string): string {
  try {
    return realpathSync.native(p);
  } catch {
    return p;
  }
}

export class Allowlist {
  private readonly trees: string[];
  private readonly files = new Set<string>();

  /** `imageTrees`: the directories the path policy allows (the image's own directory tree). */
  constructor(imageTrees: string[], extraFiles: string[] = []) {
    this.trees = [...RUNTIME_TREES, ...imageTrees].flatMap((t) => [t, realOr(t)]);
    for (const f of [...RUNTIME_FILES, ...extraFiles]) {
      this.files.add(f);
      this.files.add(realOr(f));
    }
    // Ancestors of every allowed entry (realpath and lookups stat them on the way down).
    for (const p of [...this.trees, ...this.files]) {
      for (let d = dirname(p); ; d = dirname(d)) {
        this.files.add(d);
        if (d === '/') break;
      }
    }
  }

  allows(path: string): boolean {
    if (this.files.has(path)) return true;
    if (OWN_PROC.test(path)) return true;
    return this.trees.some((t) => path === t || path.startsWith(t + '/'));
  }

  /** Calls whose path is outside the allowlist (each with the absolute path it resolved to). */
  violations(calls: TracedCall[], cwd: string): { path: string; line: string }[] {
    const cwdOf = new Map<number, string>();
    // A run names the same runtime files over and over: each is resolved once.
    const realpaths = new Map<string, string | null>();
    const out: { path: string; line: string }[] = [];
    for (const c of calls) {
      if (c.path === undefined || c.path === '') continue;
      const here = cwdOf.get(c.pid) ?? cwd;
      if (c.syscall === 'chdir' && /= 0$/.test(c.line)) cwdOf.set(c.pid, resolve(here, c.path));
      if (c.syscall === 'mount' && MOUNT_SOURCES.has(c.path)) continue;
      // symlink(target, linkpath): the target is text written into the link, not a lookup.
      if (c.syscall === 'symlink') continue;
      // The run's own GNU time output file.
      if (c.path.startsWith(TIME_OUTPUT_PREFIX)) continue;
      if (!c.path.startsWith('/') && c.relativeTo === 'dirfd') {
        if (!BWRAP_RELATIVE.test(c.path)) out.push({ path: c.path, line: c.line });
        continue;
      }
      const abs = resolve(here, c.path);
      if (!this.allows(abs)) {
        out.push({ path: abs, line: c.line });
        continue;
      }
      // Where the kernel went: through the symlinks (which still exist), except the last component
      // of a call that does not follow it. procfs links point into the checking process, not the
      // traced one, so they are taken as spelled.
      if (abs.startsWith('/proc/')) continue;
      const real = resolvedPath({ ...c, path: abs }, here, realpaths);
      if (real !== undefined && !this.allows(real)) out.push({ path: `${abs} -> ${real}`, line: c.line });
    }
    return out;
  }
}

/** IP sockets connected to (AF_UNIX between node's own threads is fine). */
export function ipConnects(calls: TracedCall[]): TracedCall[] {
  return calls.filter((c) => c.syscall === 'connect' && /AF_INET/.test(c.line));
}
