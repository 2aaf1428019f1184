// The production guest: the one file the sandbox runs (dist/guest.cjs).
import { ops } from '../ops/registry.ts';
import { serveGuest } from './serve.ts';

void serveGuest(ops);
