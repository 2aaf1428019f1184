// Called by build.mjs once the guest bundles are written: builds the guest's loader
// (src/guest/loader.ts) and a V8 code cache for each bundle (scripts/guest-cache.ts). A cache
// that cannot be made is a warning, not a failed build: without it the guest starts as before.
import { build } from 'esbuild';
import { resolve } from 'node:path';

const common = { bundle: true, platform: 'node', target: 'node20', logLevel: 'warning' };

export async function buildGuestCodeCaches(bundles) {
  const loader = resolve('dist/guest-loader.cjs');
  await build({ ...common, format: 'cjs', entryPoints: ['src/guest/loader.ts'], outfile: loader });
  const maker = await build({ ...common, format: 'esm', entryPoints: ['scripts/guest-cache.ts'], write: false });
  const { makeGuestCodeCache } = await import(`data:text/javascript;base64,${Buffer.from(maker.outputFiles[0].contents).toString('base64')}`);
  for (const bundle of bundles) {
    try {
      const failed = makeGuestCodeCache(resolve(bundle), loader).filter((last) => !last.includes('"type":"result"'));
      if (failed.length > 0) console.warn(`guest code cache for ${bundle}: a training op failed (${failed[0]})`);
    } catch (e) {
      console.warn(`guest code cache for ${bundle} not made: ${e.message}`);
    }
  }
}
