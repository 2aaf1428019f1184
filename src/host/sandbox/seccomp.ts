// A seccomp BPF program, emitted in plain JS and handed to bwrap (`--seccomp FD`), which
// installs it just before it execs the guest's node. It is a denylist: Node's own start-up
// needs a long, version-dependent list of syscalls (measured with strace), while what a
// hostile guest would want — the network, other processes, namespaces, the kernel's
// less-travelled interfaces — is short and stable.
//
// execve stays allowed: bwrap's own exec of node happens after the filter is installed.
// Process creation is refused instead (fork, vfork, clone without CLONE_THREAD), and the
// only executable inside the bwrap root is node itself.

const AUDIT_ARCH_X86_64 = 0xc000003e;
const X32_SYSCALL_BIT = 0x40000000;

// struct seccomp_data: int nr; u32 arch; u64 ip; u64 args[6] (little-endian on x86_64).
const OFF_NR = 0;
const OFF_ARCH = 4;
const offArgLow = (i: number) => 16 + 8 * i;

// Classic BPF opcodes.
const LD_W_ABS = 0x20;
const JMP_JEQ_K = 0x15;
const JMP_JGE_K = 0x35;
const JMP_JSET_K = 0x45;
const RET_K = 0x06;

const RET_KILL_PROCESS = 0x80000000;
const RET_ALLOW = 0x7fff0000;
const retErrno = (errno: number) => 0x00050000 | (errno & 0xffff);
const EPERM = 1;
const ENOSYS = 38;

/** x86_64 syscall numbers refused with EPERM, so the guest fails with an ordinary error. */
const DENIED_X86_64: Record<string, number> = {
  socket: 41, connect: 42, accept: 43, bind: 49, listen: 50, socketpair: 53, accept4: 288,
  fork: 57, vfork: 58, execveat: 322, kill: 62,
  ptrace: 101, process_vm_readv: 310, process_vm_writev: 311, kcmp: 312,
  pidfd_open: 434, pidfd_getfd: 438, pidfd_send_signal: 424, process_madvise: 440,
  mount: 165, umount2: 166, pivot_root: 155, chroot: 161, setns: 308, unshare: 272,
  open_tree: 428, move_mount: 429, fsopen: 430, fsconfig: 431, fsmount: 432, fspick: 433,
  mount_setattr: 442, name_to_handle_at: 303, open_by_handle_at: 304, fanotify_init: 300,
  keyctl: 250, add_key: 248, request_key: 249, bpf: 321, perf_event_open: 298,
  userfaultfd: 323, personality: 135, syslog: 103, acct: 163, quotactl: 179,
  // io_uring would run opens and connects on kernel threads, out of this filter's sight;
  // libuv falls back to the thread pool when setup fails.
  io_uring_setup: 425, io_uring_enter: 426, io_uring_register: 427,
  kexec_load: 246, kexec_file_load: 320, init_module: 175, finit_module: 313, delete_module: 176,
  reboot: 169, swapon: 167, swapoff: 168, iopl: 172, ioperm: 173, vhangup: 153,
  settimeofday: 164, clock_settime: 227, adjtimex: 159, clock_adjtime: 305,
};

const SYS_CLONE = 56;
const SYS_CLONE3 = 435;
const SYS_TKILL = 200;
const SYS_TGKILL = 234;
const CLONE_THREAD = 0x00010000;
// CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET | NEWTIME(0x80)
const CLONE_NEW_ANY = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000 | 0x00000080;
/** Thread-directed signals the runtime itself sends: abort() (SIGABRT), glibc's SIGCANCEL/SIGSETXID. */
const OWN_THREAD_SIGNALS = [6, 32, 33];

type Insn = [code: number, jt: number, jf: number, k: number];

/** The filter's instructions; exported for tests that want to inspect the program. */
export function seccompInstructions(): Insn[] {
  const p: Insn[] = [];
  const ret = (k: number) => p.push([RET_K, 0, 0, k]);
  // Anything but the native x86_64 ABI (i386 int 0x80, x32) is killed: syscall numbers differ.
  p.push([LD_W_ABS, 0, 0, OFF_ARCH]);
  p.push([JMP_JEQ_K, 1, 0, AUDIT_ARCH_X86_64]);
  ret(RET_KILL_PROCESS);
  p.push([LD_W_ABS, 0, 0, OFF_NR]);
  p.push([JMP_JGE_K, 0, 1, X32_SYSCALL_BIT]);
  ret(RET_KILL_PROCESS);
  for (const nr of Object.values(DENIED_X86_64)) {
    p.push([JMP_JEQ_K, 0, 1, nr]);
    ret(retErrno(EPERM));
  }
  // clone3 passes its flags in memory, out of BPF's reach: ENOSYS makes glibc fall back to clone.
  p.push([JMP_JEQ_K, 0, 1, SYS_CLONE3]);
  ret(retErrno(ENOSYS));
  // clone: threads only (CLONE_THREAD set), and no new namespaces.
  p.push([JMP_JEQ_K, 0, 5, SYS_CLONE]);
  p.push([LD_W_ABS, 0, 0, offArgLow(0)]);
  p.push([JMP_JSET_K, 2, 0, CLONE_NEW_ANY]);
  p.push([JMP_JSET_K, 0, 1, CLONE_THREAD]);
  ret(RET_ALLOW);
  ret(retErrno(EPERM));
  // tkill(tid, sig) / tgkill(tgid, tid, sig): only the signals the runtime sends to itself.
  // (The pid namespace already hides every process but the guest and bwrap's init.)
  for (const [nr, sigArg] of [[SYS_TKILL, 1], [SYS_TGKILL, 2]] as const) {
    const n = OWN_THREAD_SIGNALS.length;
    p.push([JMP_JEQ_K, 0, n + 3, nr]);
    p.push([LD_W_ABS, 0, 0, offArgLow(sigArg)]);
    OWN_THREAD_SIGNALS.forEach((sig, i) => p.push([JMP_JEQ_K, n - i, 0, sig]));
    ret(retErrno(EPERM));
    ret(RET_ALLOW);
  }
  ret(RET_ALLOW);
  return p;
}

/** The program as bwrap reads it: 8-byte struct sock_filter records in host byte order. */
export function seccompProgram(): Buffer {
  const insns = seccompInstructions();
  const buf = Buffer.alloc(insns.length * 8);
  insns.forEach(([code, jt, jf, k], i) => {
    buf.writeUInt16LE(code, i * 8);
    buf.writeUInt8(jt, i * 8 + 2);
    buf.writeUInt8(jf, i * 8 + 3);
    buf.writeUInt32LE(k >>> 0, i * 8 + 4);
  });
  return buf;
}

/** Why the filter cannot be used here, or undefined when it can. */
export function seccompUnavailable(): string | undefined {
  if (process.platform !== 'linux') return 'not Linux';
  if (process.arch !== 'x64') return `syscall table for ${process.arch} not built in (x86_64 only)`;
  return undefined;
}
