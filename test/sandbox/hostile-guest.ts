// Entry point of the test-only guest bundle: the production ops plus the hostile ones.
import { ops } from '../../src/ops/registry.ts';
import { serveGuest } from '../../src/guest/serve.ts';
import { hostileOps } from './hostile-ops.ts';

void serveGuest({ ...ops, ...hostileOps });
