// The differential fuzzer's classifier: the known, intended differences between instar and
// qemu-img, each a rule with its one-line reason. A difference no rule explains is a finding.
// Rules look at one command's pair of runs; keep them narrow (a rule that explains too much
// hides bugs) and name the README/FACTS entry that makes the difference intended.
import type { ToolResult } from './diff-tools.ts';

export interface CommandRun {
  /** info | map | compare | convert */
  command: string;
  /** The -f given to both, or undefined when both probed the format. */
  format?: string;
  unsafeQuirks: boolean;
  qemu: ToolResult;
  instar: ToolResult;
}

export interface Rule {
  name: string;
  reason: string;
  applies: (r: CommandRun) => boolean;
}

const crashed = (t: ToolResult) => t.timedOut || t.signal !== null || (t.status !== null && t.status >= 124);

/** The one excuse for an instar run that hit our timeout (checked apart from the other rules). */
export const BOTH_SLOW: Rule = {
  name: 'both-slow',
  reason: 'qemu-img did not finish within its 10 s either (a huge disk walked whole, e.g. compare of 2 TiB); instar took longer than our 30 s',
  applies: (r) => r.qemu.timedOut && r.instar.timedOut,
};

export const RULES: Rule[] = [
  {
    name: 'qemu-crashed-or-limited',
    reason: 'qemu-img crashed, or hit the ulimit -v / timeout we run it under (FACTS.md: 7.2 loops on hostile chains): it has no answer to compare with',
    applies: (r) => crashed(r.qemu),
  },
  {
    name: 'qemu-out-of-memory',
    reason: 'qemu-img failed to allocate inside its 1 GiB ulimit -v (it trusts sizes from the image); instar bounds its own allocations and may answer',
    applies: (r) => r.qemu.status !== 0 && /Cannot allocate memory|Failed to allocate|failed to allocate|Out of memory/.test(r.qemu.stderr),
  },
  {
    name: 'size-beyond-2^53',
    reason: 'instar refuses virtual sizes past 2^53 that JS numbers cannot hold exactly (vmdk, parallels drivers); qemu opens them',
    applies: (r) => r.instar.status !== 0 && r.instar.stderr.includes('Image size is too large for this reader'),
  },
  {
    name: 'path-policy',
    reason: "instar refuses files its path policy forbids (README: Files an image names); qemu-img opens them",
    applies: (r) => r.instar.status !== 0 && r.instar.stderr.includes("(instar's path policy"),
  },
  {
    name: 'qemu-self-mismatch',
    reason: 'qemu-img compare found the image different from itself (the fuzzer compares an image with itself): qemu read bytes from outside its buffers, e.g. a dmg raw chunk whose sectors pass its stored length; instar reads zeros there',
    applies: (r) => r.command === 'compare' && r.qemu.status === 1 && r.qemu.stdout.startsWith('Content mismatch at offset') && r.instar.status === 0 && r.instar.stdout === 'Images are identical.\n',
  },
  {
    name: 'no-raw-fallback',
    reason: 'default mode refuses unknown content instead of reading it as raw (README: No raw fallback); --unsafe-quirks cases are not excused',
    applies: (r) => !r.unsafeQuirks && r.format === undefined && r.instar.status !== 0 && r.instar.stderr.includes('instar does not fall back to raw'),
  },
];

/** The rule that explains a difference in this run, or undefined: a finding. */
export function explain(run: CommandRun): Rule | undefined {
  return RULES.find((rule) => rule.applies(run));
}
