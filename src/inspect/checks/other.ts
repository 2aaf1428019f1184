// Formats with little or nothing to check: LUKS, VDI and ISO are safe by oslo.utils' policy (once
// recognised); QED is banned by it; the formats oslo.utils does not know at all are refused here,
// since no check vouches for them (stricter than oslo, which would call them raw).
import { readAt } from '../../formats/bytes.ts';
import type { Window } from '../window.ts';
import { check, type FormatFindings } from '../types.ts';

export function luksChecks(w: Window): FormatFindings {
  const h = readAt(w, 0, 112);
  const payloadBytes = h.readUInt32BE(104) * 512;
  return {
    virtualSize: Math.max(0, w.size - payloadBytes),
    // The payload (the encrypted disk) starts after the header and key material: inside the file.
    fixed: { minFileSize: payloadBytes, what: 'the LUKS header and key material' },
    checks: [
      check('luks-version', () => {
        const version = h.readUInt16BE(6);
        return version === 1 ? undefined : `LUKS version ${version} is not supported`;
      }),
    ],
  };
}

export function vdiChecks(w: Window): FormatFindings {
  return { virtualSize: Number(readAt(w, 0x170, 8).readBigUInt64LE(0)), checks: [] };
}

/** ISO 9660: the primary volume descriptor's block count times its block size. */
export function isoVirtualSize(w: Window): number {
  const pvd = readAt(w, 0x8000, 2048);
  if (pvd[0] !== 1) return 0;
  return pvd.readUInt32LE(80) * pvd.readUInt16LE(128);
}

const WHY_BANNED: Record<string, string> = {
  qed: 'QED images are not allowed (they can name backing files; oslo.utils bans them too)',
  qcow: 'qcow version 1 images are not allowed',
};

/** Where the formats below keep their virtual size, for the report. */
const SIZE_FIELD: Record<string, (w: Window) => bigint> = {
  qcow: (w) => readAt(w, 0, 32).readBigUInt64BE(24),
  qed: (w) => readAt(w, 0, 56).readBigUInt64LE(48),
  parallels: (w) => readAt(w, 0, 44).readBigUInt64LE(36) * 512n,
};

/** A format no check vouches for. */
export function bannedChecks(format: string, w: Window): FormatFindings {
  const reason = WHY_BANNED[format] ?? `${format} images are not allowed: no safety checks exist for them`;
  const size = SIZE_FIELD[format]?.(w) ?? 0n;
  return { virtualSize: Number(size), checks: [{ name: 'allowed-format', passed: false, reason }] };
}
