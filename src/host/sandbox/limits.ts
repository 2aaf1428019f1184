// Resource limits for one guest run. Defaults are generous enough for real images and tight
// enough that a hostile one ends in bounded time and memory.

export interface SandboxLimits {
  /** RLIMIT_DATA (prlimit --data): Buffers and WASM memory beyond it fail with a RangeError. */
  memoryBytes: number;
  /** RLIMIT_CPU soft limit in seconds (SIGXCPU); the hard limit is one second later (SIGKILL). */
  cpuSeconds: number;
  /** Wall-clock watchdog in the host, in milliseconds: the guest is killed when it expires. */
  wallMs: number;
  /** RLIMIT_FSIZE: the largest file the guest may grow (its writable devices). */
  outputBytes: number;
  /** RLIMIT_NOFILE; Node needs ~20 descriptors of its own to start. */
  openFiles: number;
}

const GiB = 1024 * 1024 * 1024;
const TiB = 1024 * GiB;

/**
 * The guest's data limit. 2 GiB leaves room for Argon2 at cryptsetup's default 1 GiB memory cost
 * of a LUKS2 key slot (src/formats/crypto/argon2.ts bounds the cost by this budget).
 */
export const GUEST_MEMORY_BYTES = 2 * GiB;

/** Ops that read metadata only; everything else may copy a whole disk and gets hours. */
const METADATA_OPS = new Set(['info', 'probe', 'check', 'map', 'measure', 'snapshot-list']);

export function defaultLimits(op: string, devices: number, writableDevices: number): SandboxLimits {
  const quick = METADATA_OPS.has(op);
  return {
    memoryBytes: GUEST_MEMORY_BYTES,
    cpuSeconds: quick ? 120 : 6 * 3600,
    wallMs: (quick ? 120 : 6 * 3600) * 1000,
    // With no writable device nothing should grow; 0 makes any attempt fail with EFBIG.
    outputBytes: writableDevices > 0 ? 64 * TiB : 0,
    // Node's own ~20 descriptors, the devices (inherited at 4, 5, …) and some slack.
    openFiles: Math.max(64, devices + 48),
  };
}

/** The limits for a run: defaults for the op, then the caller's overrides, sanity-checked. */
export function resolveLimits(op: string, devices: readonly { writable: boolean }[], override: Partial<SandboxLimits> = {}): SandboxLimits {
  const l = { ...defaultLimits(op, devices.length, devices.filter((d) => d.writable).length), ...override };
  // Below ~64 MiB of data Node hangs at start instead of failing; below ~20 fds it crashes.
  l.memoryBytes = Math.max(Math.floor(l.memoryBytes), 64 * 1024 * 1024);
  l.openFiles = Math.max(Math.floor(l.openFiles), 32);
  l.cpuSeconds = Math.max(Math.ceil(l.cpuSeconds), 1);
  l.wallMs = Math.max(Math.floor(l.wallMs), 1);
  l.outputBytes = Math.max(Math.floor(l.outputBytes), 0);
  return l;
}
