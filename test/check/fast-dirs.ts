// TwinDirs (rebase/harness.ts), RepairDirs (repair-harness.ts) and ResizeDirs (resize/harness.ts) with instar's unsandboxed side
// run in this process (instar-sync.ts) instead of a Node launch per run: the same files, command
// lines and results; sandboxed runs, INSTAR_TEST_CLI=1 and the long tier launch the built CLI.
import type { RunOpts, RunResult } from '../helpers/oracles.ts';
import { TwinDirs as CliTwinDirs } from '../rebase/harness.ts';
import { RepairDirs as CliRepairDirs } from './repair-harness.ts';
import { ResizeDirs as CliResizeDirs } from '../resize/harness.ts';
import { instarSync } from './instar-sync.ts';

export class TwinDirs extends CliTwinDirs {
  protected override instar(args: string[], opts: RunOpts): RunResult {
    return instarSync(args, opts);
  }
}

export class RepairDirs extends CliRepairDirs {
  protected override instar(args: string[], opts: RunOpts): RunResult {
    return instarSync(args, opts);
  }
}

export class ResizeDirs extends CliResizeDirs {
  protected override instar(args: string[], opts: RunOpts): RunResult {
    return instarSync(args, opts);
  }
}
