// Called by build.mjs once the guest bundles are stamped (after their code caches): makes each
// bundle's V8 startup snapshot (scripts/guest-snapshot.ts). A snapshot that cannot be made is a
// warning, not a failed build: the guest then starts from its code cache as before.
import { build } from 'esbuild';

const common = { bundle: true, platform: 'node', target: 'node20', logLevel: 'warning', format: 'esm' };

export async function buildGuestSnapshots(bundles) {
  const maker = await build({ ...common, entryPoints: ['scripts/guest-snapshot.ts'], write: false });
  const { makeGuestSnapshots } = await import(`data:text/javascript;base64,${Buffer.from(maker.outputFiles[0].contents).toString('base64')}`);
  makeGuestSnapshots(bundles);
}

/** npm's postinstall, for installs from the registry, which ship no blob (scripts/guest-snapshot-install.ts). */
export async function buildSnapshotInstaller(outfile) {
  await build({ ...common, entryPoints: ['scripts/guest-snapshot-install.ts'], outfile });
}
