// What `check` must do with each hostile image that opens: the exit status qemu-img 7.2 and 10.0
// give (measured under `ulimit -v` and `timeout`), which instar must give too. 0: no errors,
// 2: corruptions, 3: leaks only, 63: a format qemu cannot check, 1: the check failed. Images the
// helpers declare refused are refused by check as by the other commands (exit 1, one reason).
import type { HostileCase } from './case.ts';
import type { Outcome } from './outcomes.ts';

const NO_ERRORS: Outcome = { exit: 0, stdout: /No errors were found on the image\./ };
const CORRUPT: Outcome = { exit: 2, stdout: /errors were found on the image\./ };
const LEAKS: Outcome = { exit: 3, stdout: /leaked clusters were found on the image\./ };
const UNSUPPORTED: Outcome = { exit: 63, stderr: /This image format does not support checks/ };

const MEASURED: Record<string, Outcome> = {
  // The crafted qcow2 images keep a cluster their refcounts count but nothing uses.
  ...Object.fromEntries(['mbr+qcow2', 'qcow2+vmdk-descriptor', 'zlib-bomb-64m', 'zlib-bomb-every-cluster', 'zlib-garbage-stream', 'zstd-bomb-100m'].map((n) => [n, LEAKS])),
  // An L1 table past the end of the file, a truncated file, 65536 snapshot entries past it.
  ...Object.fromEntries(['l1-offset-past-eof', 'truncated-qcow2-104', 'truncated-qcow2-l1-196612', 'snapshots-65536-past-eof'].map((n) => [n, CORRUPT])),
  ...Object.fromEntries(['iso+qcow2', 'qcow2-with-elf-data', 'vmdk-desc-4mib', 'vmdk-desc-size-huge', 'vmdk-desc-unknown-type',
    'vmdk-embedded-descriptor-extent', 'vmdk-gd-past-eof', 'gpt+vhdx', 'vhdx-bat-past-eof', 'vmdk-desc-extent-negative', 'vmdk-capacity-2^63'].map((n) => [n, NO_ERRORS])),
  // raw and vpc: qemu has no checker for them.
  ...Object.fromEntries(['raw-empty', 'raw-with-mbr', 'vhd-parent-conflicting', 'vhd-parent-macx-url', 'vhd-parent-name-absolute', 'vhd-parent-overlong',
    'vhd-parent-past-eof', 'vhd-parent-unc', 'vhd-parent-volume-guid', 'vhd-parent-w2ku-volume', 'vhd-parent-w2ru-dotdot'].map((n) => [n, UNSUPPORTED])),
  // A flat extent starting 2^61 bytes into its file: the grain check fails, as in qemu.
  'vmdk-desc-offset-huge': { exit: 1, stderr: /points after EOF\nqemu-img: Check failed: Invalid argument\n$/ },
};

/** Sets each case's `check` outcome: the measured one, else the helpers' (refusals). */
export function withCheckOutcomes(cases: HostileCase[]): HostileCase[] {
  for (const c of cases) {
    const measured = MEASURED[c.name];
    if (measured) c.expect.check = measured;
    else if (c.expect.check.exit !== 1) throw new Error(`hostile case ${c.name}: no measured check outcome`);
  }
  return cases;
}
