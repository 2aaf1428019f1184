// The worker thread of instar-sync.ts: TypeScript loading (tsx) registered here, then the worker.
import { register } from 'tsx/esm/api';

register();
await import('./instar-sync-worker.ts');
