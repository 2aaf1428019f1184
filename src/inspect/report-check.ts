// The host's view of an inspection report: it comes from the sandboxed guest, so it is data to
// validate, never trusted. A report that does not have the exact shape is refused as a whole.
// `safe` is recomputed from the checks rather than believed.
import type { CheckResult, InspectReport } from './types.ts';

export class MalformedReportError extends Error {
  constructor(what: string) {
    super(`the inspector returned a malformed report (${what})`);
    this.name = 'MalformedReportError';
  }
}

const MAX_CHECKS = 64;
const MAX_TEXT = 4096;

function text(v: unknown, what: string): string {
  if (typeof v !== 'string' || v.length > MAX_TEXT) throw new MalformedReportError(what);
  return v;
}

function count(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || !Number.isInteger(v)) throw new MalformedReportError(what);
  return v;
}

function checkResult(v: unknown): CheckResult {
  if (typeof v !== 'object' || v === null) throw new MalformedReportError('check');
  const c = v as Record<string, unknown>;
  const name = text(c.name, 'check name');
  if (!/^[a-z0-9-]{1,40}$/.test(name) || typeof c.passed !== 'boolean') throw new MalformedReportError('check');
  if (c.passed) return { name, passed: true };
  return { name, passed: false, reason: text(c.reason ?? 'failed', 'check reason') };
}

/** Validates a guest's report; returns a fresh object holding only the known fields. */
export function checkReport(v: unknown): InspectReport {
  if (typeof v !== 'object' || v === null) throw new MalformedReportError('not an object');
  const r = v as Record<string, unknown>;
  const format = text(r.format, 'format');
  if (!/^[a-z0-9]{1,16}$/.test(format)) throw new MalformedReportError('format');
  if (!Array.isArray(r.checks) || r.checks.length === 0 || r.checks.length > MAX_CHECKS) throw new MalformedReportError('checks');
  const checks = r.checks.map(checkResult);
  if (!Array.isArray(r.detected) || r.detected.length > 16) throw new MalformedReportError('detected');
  const report: InspectReport = {
    format,
    'virtual-size': count(r['virtual-size'], 'virtual-size'),
    safe: checks.every((c) => c.passed),
    checks,
    'file-size': count(r['file-size'], 'file-size'),
    detected: r.detected.map((d) => text(d, 'detected')),
  };
  const table = r['partition-table'];
  if (table === 'mbr' || table === 'gpt') report['partition-table'] = table;
  else if (table !== undefined) throw new MalformedReportError('partition-table');
  return report;
}
