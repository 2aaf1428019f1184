// `snapshot`: the trusted half. Parses qemu-img's options in its order, opens the image (read-only
// for -l, read-write with O_DSYNC for -c/-d/-a, as qemu's BDRV_O_RDWR open), lets a guest list or
// change the internal snapshots, fsyncs a changed image after the guest exits, and prints qemu's
// table or message. Files the image names are opened only through the path policy.
import type { Command, CommandContext } from './types.ts';
import type { ParsedCommand } from '../../cli/types.ts';
import { InputImageError, openTop, topTarget, type Target, guestFormat } from '../input-image.ts';
import { openWritable, PROBED_RAW_WARNING, runOnImage } from '../writable-image.ts';
import { addObject, sourceSecrets } from '../secrets.ts';
import { usageError } from '../../cli/usage-error.ts';
import { snapshotHeader, snapshotLine } from '../../output/snapshot-table.ts';
import { validSnapshotChange, validSnapshotList } from './snapshot-result.ts';
import type { SnapshotAction, SnapshotOptions } from '../../ops/snapshot.ts';
import { optionsInOrder } from '../../cli/argv-stop.ts';

type Action = 'list' | SnapshotAction;

interface SnapshotArgs {
  /** undefined: 7.2 without -l/-c/-d/-a opens the image read-write and does nothing. */
  action?: Action;
  name: string;
}

const ERRNO_NUMBERS: Record<string, number> = { ENOTSUP: 95, EFBIG: 27, EIO: 5, EINVAL: 22, ENOSPC: 28 };

function parseArgs(cmd: ParsedCommand, ctx: CommandContext): SnapshotArgs | number {
  let action: Action | undefined;
  let name = '';
  const objects: string[] = [];
  for (const [key, value] of optionsInOrder(cmd)) {
    if (key === 'object' && !addObject(objects, value, ctx.err, ctx.progname)) return 1;
    if (key !== 'list' && key !== 'apply' && key !== 'create' && key !== 'delete') continue;
    if (action !== undefined) return usageError(ctx, cmd, "Cannot mix '-l', '-a', '-c', '-d'");
    action = key;
    name = value;
  }
  if (cmd.args.length !== 1) return usageError(ctx, cmd, 'Expecting one image file name');
  // 10.0 lists when no action is given; 7.2 opens the image read-write and stops.
  if (action === undefined && ctx.profile.major >= 10) action = 'list';
  return { action, name };
}

/** The image opened as qemu-img snapshot opens it: read-write unless listing. */
function openImage(cmd: ParsedCommand, target: Target, writable: boolean): number {
  return writable ? openWritable(cmd, target) : openTop(target);
}

async function runSnapshot(cmd: ParsedCommand, args: SnapshotArgs, ctx: CommandContext): Promise<number> {
  const target = topTarget(cmd, cmd.args[0]);
  const writable = args.action !== 'list';
  const fd = openImage(cmd, target, writable);
  const nowMicros = Date.now() * 1000;
  const options: SnapshotOptions = {
    format: guestFormat(target.format),
    unsafeQuirks: ctx.globals.unsafeQuirks,
    fileName: target.path,
    profile: ctx.profile,
    secrets: sourceSecrets(cmd.options.get('object') ?? [], [target]),
    action: args.action === 'list' || args.action === undefined ? undefined : args.action,
    name: args.name,
    now: { sec: Math.floor(nowMicros / 1e6), nsec: (nowMicros % 1e6) * 1000 },
  };
  const op = args.action === 'list' || args.action === undefined ? 'snapshot-list' : 'snapshot';
  const raw = await runOnImage(op, options, fd, target, ctx, writable);
  if (op === 'snapshot-list') {
    const result = validSnapshotList(raw);
    if (writable && target.format === undefined && result.format === 'raw') ctx.err(PROBED_RAW_WARNING(target.path));
    if (args.action === 'list' && result.snapshots.length > 0) {
      ctx.out(`Snapshot list:\n${snapshotHeader(ctx.profile)}\n`);
      for (const sn of result.snapshots) ctx.out(`${snapshotLine(sn, ctx.profile)}\n`);
    }
    return 0;
  }
  const result = validSnapshotChange(raw);
  if (target.format === undefined && result.format === 'raw') {
    ctx.err(PROBED_RAW_WARNING(target.path));
    // qemu's generic goto reopens the image after trying its child: the warning comes twice.
    if (args.action === 'apply') ctx.err(PROBED_RAW_WARNING(target.path));
  }
  const quoted = `'${args.name}'`;
  if ('done' in result) return 0;
  const fail = (text: string) => ctx.err(`${ctx.progname}: ${text}\n`);
  if ('refused' in result) fail(result.refused);
  else if ('not-found' in result) fail(`Could not delete snapshot ${quoted}: snapshot not found`);
  else if ('unsupported' in result) fail(`Could not apply snapshot ${quoted}: Block driver does not support snapshots`);
  // EBUSY comes from qemu's generic layer (bitmaps), before the driver's load.
  else if (args.action === 'apply') fail(`Could not apply snapshot ${quoted}: ${result.errno === 'EBUSY' ? '' : 'Failed to load snapshot: '}${result.message}`);
  else {
    // 7.2 printed the negative errno before its text.
    const verb = args.action === 'create' ? 'create' : 'delete';
    const number = ERRNO_NUMBERS[result.errno] ?? 5;
    fail(ctx.profile.major >= 10 ? `Could not ${verb} snapshot ${quoted}: ${result.message}` : `Could not ${verb} snapshot ${quoted}: -${number} (${result.message})`);
  }
  return 1;
}

export const snapshot: Command = async (cmd, ctx) => {
  const args = parseArgs(cmd, ctx);
  if (typeof args === 'number') return args;
  try {
    return await runSnapshot(cmd, args, ctx);
  } catch (e) {
    if (e instanceof InputImageError) {
      ctx.err(`${ctx.progname}: ${e.message}\n`);
      return 1;
    }
    throw e;
  }
};
