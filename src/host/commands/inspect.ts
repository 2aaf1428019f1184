// `instar inspect [--format FMT] [--output human|json] FILE|-`: the upload safety inspector
// (not a qemu-img subcommand). The trusted half opens the input read-only (or hands over stdin, a
// pipe, as fd 0), lets the guest parse the untrusted bytes, validates the guest's report and
// prints it. Exit status: 0 safe, 1 unsafe, 2 not inspected (bad arguments, unreadable input).
import { closeSync, constants, fstatSync, openSync } from 'node:fs';
import type { Command, CommandContext } from './types.ts';
import { runOp, OpError } from '../sandbox/run.ts';
import { checkReport, MalformedReportError } from '../../inspect/report-check.ts';
import type { InspectReport } from '../../inspect/types.ts';
import { escapeForTerminal } from '../../output/terminal.ts';

export const EXIT_SAFE = 0;
export const EXIT_UNSAFE = 1;
export const EXIT_NOT_INSPECTED = 2;

/** Formats --format accepts: qemu's names, and the names OpenStack uses for the same things. */
const FORMATS = ['raw', 'qcow2', 'qcow', 'vmdk', 'vpc', 'vhd', 'vhdx', 'luks', 'vdi', 'qed', 'parallels', 'bochs', 'cloop', 'dmg', 'iso', 'gpt', 'mbr'];

class NotInspected extends Error {}

/** The input: a regular file opened read-only, or stdin when it is not a terminal. */
function openInput(name: string): { fd: number; sequential: boolean; close: boolean } {
  if (name === '-') {
    const st = fstatSync(0);
    if (st.isCharacterDevice()) throw new NotInspected('refusing to read an image from a terminal (pipe it in)');
    return { fd: 0, sequential: true, close: false };
  }
  let fd: number;
  try {
    fd = openSync(name, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  } catch (e) {
    throw new NotInspected(`cannot open '${name}': ${(e as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  if (!fstatSync(fd).isFile()) {
    closeSync(fd);
    throw new NotInspected(`'${name}' is not a regular file (use - to inspect a stream on stdin)`);
  }
  return { fd, sequential: false, close: true };
}

function renderHuman(name: string, r: InspectReport): string {
  const lines = [
    `image: ${escapeForTerminal(name)}`,
    `format: ${r.format}${r['partition-table'] ? ` (${r['partition-table']} partition table)` : ''}`,
    `virtual size: ${r['virtual-size']}`,
    `file size: ${r['file-size']}`,
    `verdict: ${r.safe ? 'safe' : 'UNSAFE'}`,
  ];
  for (const c of r.checks) lines.push(c.passed ? `  ok    ${c.name}` : `  FAIL  ${c.name}: ${escapeForTerminal(c.reason ?? '')}`);
  return lines.join('\n') + '\n';
}

function fail(ctx: CommandContext, message: string): number {
  ctx.err(`${ctx.progname}: inspect: ${message}\n`);
  return EXIT_NOT_INSPECTED;
}

export const inspect: Command = async (cmd, ctx) => {
  const output = cmd.options.get('output')?.at(-1) ?? 'human';
  if (output !== 'human' && output !== 'json') return fail(ctx, `--output expects 'human' or 'json', not '${output}'`);
  const expectedFormat = cmd.options.get('format')?.at(-1);
  if (expectedFormat !== undefined && !FORMATS.includes(expectedFormat)) return fail(ctx, `unknown format '${expectedFormat}'`);
  if (cmd.args.length !== 1) return fail(ctx, 'expecting one image file name (or - for stdin)');
  const name = cmd.args[0];
  let input;
  try {
    input = openInput(name);
  } catch (e) {
    if (e instanceof NotInspected) return fail(ctx, e.message);
    throw e;
  }
  let report: InspectReport;
  try {
    const options = { expectedFormat, sequential: input.sequential };
    const result = await runOp('inspect', options, [{ fd: input.fd, role: 'input', writable: false }], ctx.run);
    report = checkReport(result);
  } catch (e) {
    if (e instanceof OpError || e instanceof MalformedReportError) return fail(ctx, e.message);
    // Anything else is a bug or a system error: still "not inspected", never a verdict.
    return fail(ctx, `internal error: ${e instanceof Error ? e.message : String(e)}`);
  } finally {
    if (input.close) closeSync(input.fd);
  }
  ctx.out(output === 'json' ? JSON.stringify(report) + '\n' : renderHuman(name, report));
  return report.safe ? EXIT_SAFE : EXIT_UNSAFE;
};
