// The guest half of `amend`, in qemu-img's order after the image opened: `-o help` (the host
// prints it for the format found), a format without amendment, the option list checked against
// the driver's amend options (a create-only option gets qemu's hint), then the driver's plan
// applied (formats/repair.ts). Errors qemu reports after it wrote come back with the result.
import { ImageError, type AmendContext } from '../formats/types.ts';
import { findDriver } from '../formats/registry.ts';
import { applyRepair } from '../formats/repair.ts';
import { AMEND_OPTIONS } from '../formats/amend-options.ts';
import { OptionListError, parseCreateOptions } from '../host/commands/measure-options.ts';
import { openTree, type OpenTreeOptions } from './open-tree.ts';
import type { OpContext } from './types.ts';

export interface AmendOptions extends OpenTreeOptions {
  /** The accumulated -o list (already checked as a list by the host). */
  optionList: string;
  help: boolean;
  /** The host refused something the options name: open (qemu's errors first), then stop. */
  stopAfterOpen?: boolean;
  /** qemu 8.0's size-suffix rules apply (profile). */
  newSizeRules: boolean;
  /** Tests only: stop after this many writes (crash simulation). */
  stopAfterWrites?: number;
  /** qemu-img amend --force. */
  force?: boolean;
  /** The secrets the options name (new-secret, old-secret): base64 by id. */
  amendSecrets?: Record<string, string>;
}

/** An error as qemu prints it: the first line after "<progname>: ", the rest (hints) as they are. */
export type ErrorLines = string[];

export type AmendResult =
  | { format: string; help: true }
  | { format: string; unsupported: true }
  | { format: string; refused: string }
  | { format: string; error: ErrorLines }
  /** progress: the percentages the driver reported (before qemu-img's final 100%); errorHint: printed after error, with no newline. */
  | { format: string; done: true; progress: number[]; error?: ErrorLines; errorHint?: string };

export function amendOp(options: Record<string, unknown>, ctx: OpContext): AmendResult {
  const opts = options as unknown as AmendOptions;
  // qemu-img amend opens the whole chain (no BDRV_O_NO_BACKING): a missing backing file fails it.
  const image = openTree(ctx, 0, opts);
  const format = image.format;
  // The host refused a name the options give: stop right after the open, writing nothing.
  if (opts.stopAfterOpen === true) return { format, help: true };
  const amend = findDriver(format)?.amend;
  const table = AMEND_OPTIONS[format];
  const input = ctx.devices[0];
  if (!input?.spec.writable) throw new ImageError('the image was not opened for writing');
  /** What qemu's writable open alone did before it stopped (a plan with no options changes nothing else). */
  const openedOnly = (): void => {
    if (!amend) return;
    const plan = amend.plan(input.dev, image, new Map());
    if (!('refused' in plan)) applyRepair(input.dev, plan.steps);
  };
  if (opts.help === true) {
    openedOnly();
    return { format, help: true };
  }
  if (!table) return { format, unsupported: true };
  if (!amend) return { format, refused: `instar cannot amend ${format} images yet; nothing was written` };
  const types = Object.fromEntries(table.amend.map(([name, type]) => [name, type]));
  let values: Map<string, string>;
  try {
    values = parseCreateOptions(String(opts.optionList), types, opts.newSizeRules === true);
  } catch (e) {
    if (!(e instanceof OptionListError)) throw e;
    const lines = e.lines.map((l) => l.text);
    // qemu parses the list again with the create options too: if that passes, the option exists only there.
    try {
      parseCreateOptions(String(opts.optionList), { ...types, ...table.createOnly }, opts.newSizeRules === true);
      lines.push('This option is only supported for image creation');
    } catch (again) {
      if (!(again instanceof OptionListError)) throw again;
    }
    openedOnly();
    return { format, error: lines };
  }
  const plan = amend.plan(input.dev, image, values, amendContext(opts));
  if ('refused' in plan) return { format, refused: plan.refused };
  applyRepair(input.dev, plan.steps, { stopAfterWrites: typeof opts.stopAfterWrites === 'number' ? opts.stopAfterWrites : undefined });
  const progress = plan.progress ?? [];
  if (!plan.error) return { format, done: true, progress };
  const hint = plan.errorHint === undefined ? {} : { errorHint: plan.errorHint };
  return { format, done: true, progress, error: plan.error, ...hint };
}

/** What the driver's plan needs beyond the option values (LUKS key slots). */
function amendContext(opts: AmendOptions): AmendContext {
  const secrets = new Map(Object.entries(opts.amendSecrets ?? {}).map(([id, data]) => [id, Buffer.from(String(data), 'base64')]));
  const key = opts.secrets?.[0];
  return { force: opts.force === true, secrets, key: key === undefined ? undefined : Buffer.from(key, 'base64'), optionList: String(opts.optionList) };
}
