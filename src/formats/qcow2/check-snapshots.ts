// qcow2_check_read_snapshot_table: qemu-img check opens a qcow2 image without its snapshot table
// (BDRV_O_CHECK), then validates and reads it first thing, failing the check with qemu's words.
import { ImageError, type BlockDevice } from '../types.ts';
import { addLine, CheckFailure, type CheckReport } from '../check-types.ts';
import { MAX_SNAPSHOTS, SNAPSHOT_HEADER_SIZE, type Qcow2Header } from './header.ts';
import { readSnapshots } from './snapshots.ts';

const INT64_MAX = (1n << 63n) - 1n;

export function checkSnapshotTable(dev: BlockDevice, h: Qcow2Header, report: CheckReport): void {
  const fail = (strerror: string): never => {
    report['check-errors']++;
    throw new CheckFailure(strerror);
  };
  // qcow2_validate_table with the lower-case name the check gives it.
  if (h.nbSnapshots > MAX_SNAPSHOTS) {
    addLine(report, [2, 'ERROR snapshot table too large']);
    addLine(report, `You can force-remove all ${h.nbSnapshots - MAX_SNAPSHOTS} overhanging snapshots with qemu-img check -r all`);
    fail('File too large');
  }
  const bytes = BigInt(h.nbSnapshots) * BigInt(SNAPSHOT_HEADER_SIZE);
  if (INT64_MAX - bytes < h.snapshotsOffset || h.snapshotsOffset % BigInt(h.clusterSize) !== 0n) {
    addLine(report, [2, 'ERROR snapshot table offset invalid']);
    fail('Invalid argument');
  }
  try {
    readSnapshots(dev, h);
  } catch (e) {
    if (!(e instanceof ImageError)) throw e;
    // The message may carry qemu's hint on its following lines.
    const [first, ...hint] = e.message.split('\n');
    addLine(report, [2, `ERROR failed to read the snapshot table: ${first}`]);
    for (const line of hint) addLine(report, line);
    fail(e.errno === 'EIO' ? 'Input/output error' : 'File too large');
  }
}
