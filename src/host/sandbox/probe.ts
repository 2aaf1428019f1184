// Which sandbox layers this machine offers, probed once per process and cached, and the
// plan for one launch: what will be active, and why anything is missing.
import { permissionFlag } from './layers/permission.ts';
import { findExecutable, PRLIMIT_CANDIDATES } from './layers/prlimit.ts';
import { markBwrapBroken, probeBwrap, verifyBwrap, type BwrapProbe } from './layers/bwrap.ts';
import { seccompProgram, seccompUnavailable } from './seccomp.ts';

export type LayerName = 'permission' | 'prlimit' | 'bwrap' | 'seccomp';
export const LAYERS: LayerName[] = ['permission', 'prlimit', 'bwrap', 'seccomp'];

export interface LayerPlan {
  permission: boolean;
  prlimit?: string;
  bwrap?: BwrapProbe;
  seccomp: boolean;
  /** Missing layers with the reason, in layer order. */
  missing: { layer: LayerName; why: string }[];
}

/** Decides the layers for one launch; `disabled` pretends layers are absent (tests only). */
export function planLayers(disabled: readonly LayerName[] = []): LayerPlan {
  const missing: LayerPlan['missing'] = [];
  const off = (layer: LayerName) => (disabled.includes(layer) ? 'disabled by the caller' : undefined);

  const permWhy = off('permission') ?? (permissionFlag() ? undefined : `this node (${process.version}) has no permission model`);
  if (permWhy) missing.push({ layer: 'permission', why: permWhy });

  let prlimit: string | undefined;
  let prWhy = off('prlimit');
  if (!prWhy) {
    prlimit = findExecutable(PRLIMIT_CANDIDATES);
    if (!prlimit) prWhy = `prlimit not found (${PRLIMIT_CANDIDATES.join(', ')}); install util-linux`;
  }
  if (prWhy) missing.push({ layer: 'prlimit', why: prWhy });

  let bwrap: BwrapProbe | undefined;
  let bwWhy = off('bwrap');
  if (!bwWhy) {
    const probe = probeBwrap();
    if (typeof probe === 'string') bwWhy = probe;
    else bwrap = probe;
  }
  if (bwWhy) missing.push({ layer: 'bwrap', why: bwWhy });

  // bwrap is what installs the filter, so seccomp needs it.
  const scWhy = off('seccomp') ?? (bwrap ? seccompBroken ?? seccompUnavailable() : 'needs bwrap to install it');
  if (scWhy) missing.push({ layer: 'seccomp', why: scWhy });

  return { permission: !permWhy, prlimit, bwrap, seccomp: !scWhy, missing };
}

/** One line per layer for --debug. */
export function describePlan(plan: LayerPlan): string[] {
  return LAYERS.map((layer) => {
    const gone = plan.missing.find((m) => m.layer === layer);
    return gone ? `sandbox: ${layer}: missing (${gone.why})` : `sandbox: ${layer}: active`;
  });
}

let seccompBroken: string | undefined;

/**
 * After a launch under bwrap ended without a word from the guest: checks, with a trial sandbox
 * that runs none of the guest's code, whether bwrap or the filter cannot work on this machine.
 * Returns the layer found broken (now recorded as missing), or undefined if both work.
 */
export function diagnoseLaunchFailure(plan: LayerPlan): { layer: LayerName; why: string } | undefined {
  if (!plan.bwrap) return undefined;
  if (plan.seccomp && verifyBwrap(plan.bwrap, seccompProgram()) !== undefined) {
    const plain = verifyBwrap(plan.bwrap);
    if (plain === undefined) {
      seccompBroken = 'the kernel refused the seccomp filter';
      return { layer: 'seccomp', why: seccompBroken };
    }
    markBwrapBroken(plain);
    return { layer: 'bwrap', why: plain };
  }
  if (plan.seccomp) return undefined;
  const why = verifyBwrap(plan.bwrap);
  if (why === undefined) return undefined;
  markBwrapBroken(why);
  return { layer: 'bwrap', why };
}
