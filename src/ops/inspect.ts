import { ImageError } from '../formats/types.ts';
import { FdDevice } from '../io/fd-device.ts';
import { inspectDevice, inspectSequentialFd } from '../inspect/inspect.ts';
import type { Op } from './types.ts';

export interface InspectOpOptions {
  /** The format the uploader declared (--format). */
  expectedFormat?: string;
  /** The input is a pipe (stdin): read it front to back, never seek. */
  sequential?: boolean;
}

/** The guest half of `inspect`: the untrusted bytes are parsed here, over the input fd only. */
export const inspectOp: Op = (options, ctx) => {
  const opts = options as InspectOpOptions;
  const input = ctx.devices.find((d) => d.spec.role === 'input');
  if (!input) throw new ImageError('no input device');
  const expected = typeof opts.expectedFormat === 'string' ? { expectedFormat: opts.expectedFormat } : {};
  if (opts.sequential) {
    // A pipe has no positions: the device wrapper's fd is read in order, once.
    if (!(input.dev instanceof FdDevice)) throw new ImageError('a sequential input needs a file descriptor');
    return inspectSequentialFd(input.dev.fd, expected);
  }
  return inspectDevice(input.dev, expected);
};
