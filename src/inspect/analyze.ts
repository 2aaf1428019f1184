// From an inspection window to a verdict: which format, what its checks say, and the checks every
// upload gets (one format only, the expected format, a sane size).
import type { Window } from './window.ts';
import { signatures, type Signature } from './signatures.ts';
import { qcow2Checks } from './checks/qcow2.ts';
import { vmdkChecks } from './checks/vmdk.ts';
import { vpcChecks, vhdxChecks } from './checks/vhd.ts';
import { partitionChecks } from './checks/partitions.ts';
import { bannedChecks, isoVirtualSize, luksChecks, vdiChecks } from './checks/other.ts';
import { MAX_SANE_VIRTUAL_SIZE, type CheckResult, type FormatFindings, type InspectReport } from './types.ts';

export interface AnalyzeOptions {
  /** The format the uploader declared (qemu names; 'vhd', 'gpt', 'mbr', 'iso' accepted too). */
  expectedFormat?: string;
  /** The file's name, for qemu's name-based dmg probe only. */
  fileName?: string;
}

/** Names other tools use for the same thing, mapped to the report's names. */
const ALIASES: Record<string, string> = { vhd: 'vpc', gpt: 'raw', mbr: 'raw' };

const label = (s: Signature) => (s.detail ? `${s.format}:${s.detail}` : s.format);

function findingsFor(sig: Signature | undefined, w: Window): FormatFindings {
  if (sig === undefined) return { virtualSize: w.size, checks: [] };
  switch (sig.format) {
    case 'qcow2': return qcow2Checks(w);
    case 'vmdk': return vmdkChecks(w);
    case 'vpc': return vpcChecks(w);
    case 'vhdx': return vhdxChecks(w);
    case 'luks': return luksChecks(w);
    case 'vdi': return vdiChecks(w);
    case 'iso': {
      const virtualSize = isoVirtualSize(w);
      return { virtualSize, checks: [], fixed: { minFileSize: virtualSize, what: 'the ISO volume' } };
    }
    case 'raw': return { virtualSize: w.size, checks: partitionChecks(w) };
    default: return bannedChecks(sig.format, w);
  }
}

/** Whether the declared format names what was found ('raw' covers a partitioned disk, 'gpt' only one). */
function expectedMatches(expected: string, sig: Signature | undefined): boolean {
  const want = ALIASES[expected] ?? expected;
  const found = sig?.format ?? 'raw';
  if (want !== found) return false;
  return expected === 'gpt' || expected === 'mbr' ? sig?.detail === expected : true;
}

function sizeCheck(findings: FormatFindings, fileSize: number): CheckResult {
  const name = 'virtual-size';
  const virtualSize = findings.virtualSize;
  if (!Number.isSafeInteger(virtualSize) || virtualSize < 0 || virtualSize > MAX_SANE_VIRTUAL_SIZE) {
    return { name, passed: false, reason: `virtual size ${virtualSize} is absurd (limit ${MAX_SANE_VIRTUAL_SIZE})` };
  }
  // Where the disk's bytes are stored in place, a file shorter than the disk hides where the rest
  // would come from.
  const fixed = findings.fixed;
  if (fixed && fileSize < fixed.minFileSize) {
    return { name, passed: false, reason: `${fixed.what} needs ${fixed.minFileSize} bytes, but the file has ${fileSize}` };
  }
  return { name, passed: true };
}

/** Inspects the window; a pure function of its bytes and the options. */
export function analyze(w: Window, opts: AnalyzeOptions = {}): InspectReport {
  const found = signatures(w, opts.fileName);
  const primary = found[0];
  const format = primary?.format ?? 'raw';
  const findings = findingsFor(primary, w);
  const checks: CheckResult[] = [];
  checks.push(
    found.length > 1
      ? { name: 'single-format', passed: false, reason: `the file probes as ${found.length} formats: ${found.map(label).join(', ')}` }
      : { name: 'single-format', passed: true },
  );
  if (primary === undefined && w.size > 0) {
    // Unrecognised content is raw only by the uploader's word: qemu would call it raw, but so it
    // would a header it does not know yet. It passes when declared raw.
    const declaredRaw = opts.expectedFormat === 'raw';
    checks.push(declaredRaw
      ? { name: 'known-format', passed: true }
      : { name: 'known-format', passed: false, reason: 'no disk image format or partition table recognised; it is safe only as declared raw (--format raw)' });
  }
  checks.push(...findings.checks);
  checks.push(sizeCheck(findings, w.size));
  if (opts.expectedFormat !== undefined) {
    checks.push(expectedMatches(opts.expectedFormat, primary)
      ? { name: 'expected-format', passed: true }
      : { name: 'expected-format', passed: false, reason: `declared ${opts.expectedFormat}, but the content is ${primary ? label(primary) : 'unrecognised'}` });
  }
  const report: InspectReport = {
    format,
    'virtual-size': findings.virtualSize,
    safe: checks.every((c) => c.passed),
    checks,
    'file-size': w.size,
    detected: found.map(label),
  };
  if (primary?.format === 'raw' && (primary.detail === 'mbr' || primary.detail === 'gpt')) report['partition-table'] = primary.detail;
  return report;
}
