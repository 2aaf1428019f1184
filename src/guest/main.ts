// The production guest: the one file the sandbox runs (dist/guest.cjs), or the startup
// snapshot made from it (dist/guest.blob).
import { ops } from '../ops/registry.ts';
import { startGuest } from './start.ts';

startGuest(ops);
