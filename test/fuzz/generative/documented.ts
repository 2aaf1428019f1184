// The differences README.md documents as intended where instar refuses and qemu does something
// else (and --unsafe-quirks does not give qemu's way): the mutating hunt counts a step that
// matches one of them as intended, takes over qemu's copy and goes on, instead of reporting it
// on every campaign. Each entry names both sides: instar's refusal and the outcome qemu has there.
import type { RunResult } from '../../helpers/oracles.ts';

interface DocumentedRefusal {
  /** What README.md says, in short. */
  why: string;
  /** instar's message (after the program name). */
  instar: RegExp;
  /** qemu's exit status and message (after the program name) in that case. */
  qemu: { status: number; stderr: RegExp };
}

const REFUSALS: readonly DocumentedRefusal[] = [
  {
    // README "Known differences": qemu copies the data into the top, then cannot name the
    // backing file in it (or fails writing a streamOptimized VMDK); instar writes nothing.
    why: 'safe rebase that would copy data into a top other than qcow2 or qed (README: known differences)',
    instar: /^instar copies data in a safe rebase of qcow2 and qed images only \(this is \w+\); use -u to change only the backing file name; nothing was written$/,
    qemu: {
      status: 1,
      stderr: /^(Could not change the backing file to '.*': (Operation not supported|backing format must be specified)|Error while writing to COW image: .*)$/,
    },
  },
];

/** The one-line message of a failed run, without the program name; undefined when there are more lines. */
function message(stderr: string): string | undefined {
  const lines = stderr.split('\n').filter((l) => l !== '');
  return lines.length === 1 ? lines[0].replace(/^[^:]*: /, '') : undefined;
}

/** Why a step where instar refused and qemu did otherwise is a documented difference, or undefined. */
export function documentedRefusal(qemu: RunResult, instar: RunResult): string | undefined {
  const mine = message(instar.stderr);
  const theirs = message(qemu.stderr);
  if (instar.status === 0 || mine === undefined || theirs === undefined) return undefined;
  const match = REFUSALS.find((r) => r.instar.test(mine) && qemu.status === r.qemu.status && r.qemu.stderr.test(theirs));
  return match?.why;
}
