// The guest's check report is untrusted data: every field is shape- and range-checked before any
// of it is printed, and its text lines are cleaned of anything a terminal would act on.
import { OpError } from '../sandbox/run.ts';
import { MAX_CHECK_LINES, type CheckLine, type CheckReport } from '../../formats/check-types.ts';
import type { CheckResult } from '../../ops/check.ts';

const COUNTERS = ['check-errors', 'corruptions', 'leaks', 'corruptions-fixed', 'leaks-fixed', 'image-end-offset',
  'total-clusters', 'allocated-clusters', 'fragmented-clusters', 'compressed-clusters'] as const;
const MAX_LINE = 4096;
/** A run covers at most every cluster a file can have (qemu refuses more than INT_MAX). */
const MAX_RUN = 0x7fffffff;
const DECIMAL = /^(0|[1-9][0-9]{0,19})$/;

const isCount = (v: unknown, max = Number.MAX_SAFE_INTEGER) => Number.isSafeInteger(v) && (v as number) >= 0 && (v as number) <= max;

function validLine(l: unknown): l is CheckLine {
  if (typeof l === 'string') return l.length <= MAX_LINE && !l.includes('\n');
  if (Array.isArray(l) && l.length === 2) return l[0] === 2 && typeof l[1] === 'string' && l[1].length <= MAX_LINE && !l[1].includes('\n');
  return Array.isArray(l) && l.length === 5 && (l[0] === 0 || l[0] === 1 || l[0] === 3) && isCount(l[1], MAX_RUN) && isCount(l[2], MAX_RUN) &&
    typeof l[3] === 'string' && DECIMAL.test(l[3]) && typeof l[4] === 'string' && DECIMAL.test(l[4]);
}

/** Check lines from a guest, or undefined when they are malformed. */
export function validCheckLines(lines: unknown): CheckLine[] | undefined {
  return Array.isArray(lines) && lines.length <= MAX_CHECK_LINES && lines.every(validLine) ? (lines as CheckLine[]) : undefined;
}

export function validCheckResult(value: unknown): CheckResult {
  const fail = () => new OpError('the guest gave a malformed check result');
  const r = (value ?? {}) as Record<string, unknown>;
  if (typeof r.format !== 'string' || !/^[a-z0-9_-]{1,32}$/.test(r.format)) throw fail();
  if (r.unsupported === true) return { format: r.format, unsupported: true };
  if (r.refused !== undefined) {
    if (typeof r.refused !== 'string' || !/^[A-Za-z0-9 ,.;:'()/_-]{1,200}$/.test(r.refused)) throw fail();
    return { format: r.format, refused: r.refused };
  }
  const rep = (r.report ?? {}) as Record<string, unknown>;
  if (!COUNTERS.every((k) => isCount(rep[k]))) throw fail();
  if (!Array.isArray(rep.lines) || rep.lines.length > MAX_CHECK_LINES || !rep.lines.every(validLine) || !isCount(rep.omitted)) throw fail();
  if (rep.failure !== undefined && (typeof rep.failure !== 'string' || !/^[A-Za-z0-9 ,'()/-]{1,100}$/.test(rep.failure))) throw fail();
  if (r.repair === undefined) return { format: r.format, report: rep as unknown as CheckReport };
  const pass = (r.repair ?? {}) as Record<string, unknown>;
  if (!Array.isArray(pass.lines) || pass.lines.length > MAX_CHECK_LINES || !pass.lines.every(validLine) || !isCount(pass.omitted)) throw fail();
  return { format: r.format, report: rep as unknown as CheckReport, repair: { lines: pass.lines as CheckLine[], omitted: pass.omitted as number } };
}
