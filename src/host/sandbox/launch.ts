import type { HostDevice, RunOptions } from './run.ts';
import { OpError } from './run.ts';

// Placeholder until the sandbox launcher lands: refuses rather than running unsandboxed.
export async function runSandboxed(_op: string, _options: Record<string, unknown>, _devices: HostDevice[], _run: RunOptions): Promise<unknown> {
  throw new OpError('the sandbox is not available yet; use --sandbox=none');
}
