// What `dd` and `snapshot -l` must do with each hostile image, derived from what the case declares
// for the commands they resemble: dd reads the whole disk as convert does (a refusal or read
// failure ends it the same way), and snapshot -l opens the image as info does. Where instar's
// run showed a different but qemu-like answer, it is listed here by case.
import type { HostileCase } from './case.ts';
import type { Outcome } from './outcomes.ts';

const DATA_FILE_REFUSED: Outcome = { exit: 1, stderr: /outside the allowed paths|names the protocol/ };

const MEASURED_DD: Record<string, Outcome> = {
  // dd asks for the size in its own words.
  'vmdk-capacity-2^63': { exit: 1, stderr: /Failed to get size for 'top'/ },
};
const MEASURED_SNAPSHOT: Record<string, Outcome> = {
  // snapshot opens the image with its data file (as qemu-img snapshot does; info does not).
  ...Object.fromEntries(['data-file-etc-passwd', 'data-file-etc-shadow', 'data-file-dotdot-passwd', 'data-file-dev-zero', 'data-file-outside-file',
    'data-file-symlink-out', 'data-file-json-file', 'data-file-nbd-url', 'data-file-raw-etc-passwd'].map((n) => [n, DATA_FILE_REFUSED])),
  // An encrypted image opens for snapshots only with its key, as in qemu-img snapshot.
  'crypt-method-aes': { exit: 1, stderr: /Parameter 'encrypt.key-secret' is required/ },
  // Listing needs no size.
  'vmdk-capacity-2^63': { exit: 0 },
};

/** Sets each case's dd and snapshot outcomes (measured, else derived). */
export function withDerivedOutcomes(cases: HostileCase[]): HostileCase[] {
  for (const c of cases) {
    const { convert, info } = c.expect;
    c.expect.dd = MEASURED_DD[c.name] ?? { exit: convert.exit, stderr: convert.stderr };
    c.expect.snapshot = MEASURED_SNAPSHOT[c.name] ?? (info.exit === 0 ? { exit: 0 } : { exit: info.exit, stderr: info.stderr });
  }
  return cases;
}
