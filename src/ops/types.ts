import type { BlockDevice } from '../formats/types.ts';
import type { DeviceSpec, GuestMessage, GuestWarning } from '../protocol/messages.ts';

/** What an op sees: its devices (already wrapped) and a way to stream messages to the host. */
export interface OpContext {
  devices: { spec: DeviceSpec; dev: BlockDevice }[];
  emit(msg: GuestMessage): void;
  /** Queues a line for stderr (bounded; sent with the op's result or error). */
  warn?(warning: GuestWarning): void;
}

/** An op runs the same inside the sandboxed guest and in-process; it returns its result value. */
export type Op = (options: Record<string, unknown>, ctx: OpContext) => unknown;
