// Layer 1: Node's permission model. With no fs grant but the guest bundle, any open() by
// path, child processes, workers, addons and WASI are refused inside the guest.
import type { SandboxLimits } from '../limits.ts';

let cached: string | undefined | null = null;

/** `--permission` on newer Node, `--experimental-permission` on Node 20; undefined if neither. */
export function permissionFlag(): string | undefined {
  if (cached !== null) return cached;
  // allowedNodeEnvironmentFlags lists exactly the flags this node binary accepts (no spawn needed).
  const flags = process.allowedNodeEnvironmentFlags;
  cached = flags.has('--permission') ? '--permission' : flags.has('--experimental-permission') ? '--experimental-permission' : undefined;
  return cached;
}

/**
 * Node's own arguments for the guest (before the script path). `guestPath` is the one file the
 * guest may read; none ('') when it starts from a snapshot, which node reads before the
 * permission model starts.
 */
export function nodeArgs(guestPath: string, limits: SandboxLimits, withPermission: boolean): string[] {
  // The JS heap gets half the data limit: the rest is for Buffers, WASM memory and V8 itself.
  const heapMiB = Math.max(32, Math.floor(limits.memoryBytes / 2 / (1024 * 1024)));
  const args = ['--no-warnings', `--max-old-space-size=${heapMiB}`];
  // CAST5 (a cipher qemu's LUKS accepts) is in OpenSSL's legacy provider only.
  if (process.allowedNodeEnvironmentFlags.has('--openssl-legacy-provider')) args.push('--openssl-legacy-provider');
  if (withPermission) args.unshift(permissionFlag()!, ...(guestPath ? [`--allow-fs-read=${guestPath}`] : []));
  return args;
}
