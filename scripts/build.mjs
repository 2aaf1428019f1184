// Bundles the CLI, the library and the guest with esbuild. The guest must be a single
// file: under the permission model it may read nothing but itself.
import { build } from 'esbuild';
import { chmodSync } from 'node:fs';

const common = { bundle: true, platform: 'node', target: 'node20', format: 'esm', sourcemap: false, logLevel: 'warning' };
// esbuild's ESM output needs a real `require` for Node built-ins pulled in by CJS deps.
const banner = { js: "import { createRequire as __instarCreateRequire } from 'node:module'; const require = __instarCreateRequire(import.meta.url);" };

const guest = { ...common, format: 'cjs', loader: { '.wasm': 'binary' } };

await Promise.all([
  build({ ...common, entryPoints: ['src/cli/main.ts'], outfile: 'dist/cli.js', banner: { js: '#!/usr/bin/env node\n' + banner.js } }),
  build({ ...common, entryPoints: ['src/index.ts'], outfile: 'dist/index.js', banner }),
  // The guest is CommonJS (.cjs): measured ~5-10 ms faster to start than ESM, which matters
  // because every sandboxed op pays one guest start.
  build({ ...guest, entryPoints: ['src/guest/main.ts'], outfile: 'dist/guest.cjs' }),
  // Test-only guest: production ops plus hostile ones (test/sandbox), run by the sandbox tests.
  build({ ...guest, entryPoints: ['test/sandbox/hostile-guest.ts'], outfile: 'dist/test/hostile-guest.cjs' }),
]);
chmodSync('dist/cli.js', 0o755);

// The qemu-img alias: invoked under that name, instar prints "qemu-img:" in its messages.
import { mkdirSync, symlinkSync, rmSync } from 'node:fs';
mkdirSync('dist/alias', { recursive: true });
rmSync('dist/alias/qemu-img', { force: true });
symlinkSync('../cli.js', 'dist/alias/qemu-img');
