// The progress qemu-img amend prints for qcow2 (qcow2_amend_helper_cb in block/qcow2.c): each
// operation (upgrade, refcount width change, downgrade) reports offsets within its own work; the
// helper adds the work of the operations already done and projects the rest from the ones seen,
// and qemu-img prints 100.f * offset / total (a C float). Only the values qemu-img's print rule
// would show are kept, so that a walk over a large refcount table sends no more than ~100 lines.
import { ProgressRule } from '../../output/progress.ts';

export type AmendOperation = 'upgrade' | 'refcount-order' | 'downgrade';

export class AmendProgress {
  readonly values: number[] = [];
  private readonly rule = new ProgressRule();
  private current?: AmendOperation;
  private last?: AmendOperation;
  private completed = 0;
  private offsetCompleted = 0;
  private lastWorkSize = 0;

  /** `operations`: how many of them this amend runs (qemu counts them before starting). */
  constructor(private readonly operations: number) {
    // The host printed 0% before the driver ran: the rule starts from there, as qemu's does.
    this.rule.set(0);
  }

  start(operation: AmendOperation): void {
    this.current = operation;
  }

  /** An operation's status callback: `offset` of `workSize` done. */
  report(offset: number, workSize: number): void {
    if (this.current !== this.last) {
      if (this.last !== undefined) {
        this.offsetCompleted += this.lastWorkSize;
        this.completed++;
      }
      this.last = this.current;
    }
    this.lastWorkSize = workSize;
    const current = this.offsetCompleted + workSize;
    // C int64 arithmetic: the division truncates.
    const projected = Math.floor((current * (this.operations - this.completed - 1)) / (this.completed + 1));
    const total = current + projected;
    const percent = Math.fround(Math.fround(100 * Math.fround(this.offsetCompleted + offset)) / Math.fround(total));
    if (this.rule.set(percent) !== undefined) this.values.push(percent);
  }
}
