// How a guest bundle starts serving. Run by node as a script it serves at once; run by
// `node --build-snapshot` (scripts/guest-snapshot.ts) its top level runs at build time, and
// serving is what the snapshot's main function does when node starts from it. Nothing here may
// read process state at the top level: in a snapshot it would be the build's, frozen. Before the
// snapshot is taken, the ops run once on images in memory (warm-up.ts), so that their compiled
// code is in it; a warm-up that fails fails the build of the snapshot.
import { startupSnapshot } from 'node:v8';
import { serveGuest } from './serve.ts';
import { warmUp } from './warm-up.ts';
import type { Op } from '../ops/types.ts';

/** What tests can read back: how this guest started ('snapshot', or the loader's cache state). */
export const START_STATE = Symbol.for('instar.guestCodeCache');

export function startGuest(ops: Record<string, Op>): void {
  if (!startupSnapshot.isBuildingSnapshot()) {
    void serveGuest(ops);
    return;
  }
  startupSnapshot.setDeserializeMainFunction(() => {
    (globalThis as Record<symbol, unknown>)[START_STATE] = 'snapshot';
    void serveGuest(ops);
  });
  // Node takes the snapshot once this has settled; a rejection ends the build with an error.
  void warmUp(ops);
}
