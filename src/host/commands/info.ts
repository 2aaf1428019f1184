import { openSync, closeSync, fstatSync } from 'node:fs';
import type { Command } from './types.ts';
import { runOp, OpError } from '../sandbox/run.ts';
import type { NodeInfo } from '../../formats/types.ts';

/** `info`: the trusted half. Opens the image read-only, asks the guest what it is, renders. */
export const info: Command = async (cmd, ctx) => {
  const filename = cmd.args[0];
  const fd = openSync(filename, 'r');
  try {
    const node = (await runOp('info', { format: cmd.options.get('format')?.at(-1) }, [{ fd, role: 'input', writable: false }], ctx.run)) as NodeInfo;
    const actual = fstatSync(fd).blocks * 512;
    ctx.out(JSON.stringify({ ...node, filename, 'actual-size': actual }, null, 4) + '\n');
    return 0;
  } catch (e) {
    if (e instanceof OpError) {
      ctx.err(`${ctx.progname}: Could not open '${filename}': ${e.message}\n`);
      return 1;
    }
    throw e;
  } finally {
    closeSync(fd);
  }
};
