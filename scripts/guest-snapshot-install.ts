// npm's postinstall (package.json), as dist/guest-snapshot-install.mjs: a package from the
// registry holds no guest.blob, which is bound to the node binary that made it, so the
// installing node makes one (scripts/guest-snapshot.ts: ~1 s, nothing downloaded). It never
// fails the install: without a blob, guests start from the code cache as before.
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { installGuestSnapshot } from './guest-snapshot.ts';

try {
  installGuestSnapshot(dirname(fileURLToPath(import.meta.url)));
} catch (e) {
  console.warn(`instar: no guest startup snapshot (${(e as Error).message}); guests start from the code cache`);
}
