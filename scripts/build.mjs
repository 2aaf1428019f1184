// Bundles the CLI, the library and the guest with esbuild. The guest must be a single
// file: under the permission model it may read nothing but itself.
import { build } from 'esbuild';
import { writeCliCodeCache } from './cli-code-cache.mjs';
import { buildGuestCodeCaches } from './guest-cache.mjs';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { brotliCompressSync, constants as zlib } from 'node:zlib';
import { resolve } from 'node:path';

const common = { bundle: true, platform: 'node', target: 'node20', format: 'esm', sourcemap: false, logLevel: 'warning' };
// esbuild's ESM output needs a real `require` for Node built-ins pulled in by CJS deps.
const banner = { js: "import { createRequire as __instarCreateRequire } from 'node:module'; const require = __instarCreateRequire(import.meta.url);" };

// Whitespace and syntax minified (names kept): the guest's snapshot is 1.1 MB smaller and its
// start ~1.5 ms cheaper (measured with perf stat, 3x20 runs); its messages are strings, never code.
const guest = { ...common, format: 'cjs', minifyWhitespace: true, minifySyntax: true };
// hash-wasm's ESM build, so that only Argon2 (and the BLAKE2b it uses) is bundled rather than every
// hash it offers: the guest's size is start-up time paid on every sandboxed op.
guest.alias = { 'hash-wasm': 'hash-wasm/dist/index.esm.js' };
// The zstd decoder's WebAssembly, embedded: the guest can read no file (src/formats/qcow2/zstd.ts).
guest.inject = ['src/formats/qcow2/zstd-embed.ts'];
// What esbuild gives CJS output anyway, said explicitly: only host-side fallbacks read it.
guest.define = { 'import.meta.url': 'undefined' };
guest.plugins = [lazyBuiltins(['node:crypto', 'node:zlib', 'node:os', 'node:module']), packedWasm()];

/**
 * An imported .wasm file becomes a string: its bytes brotli-compressed, in base64 (unpacked by
 * the importer, src/formats/qcow2/zstd-embed.ts). A string literal in the bundle is scanned at
 * every guest start, so it should be short: 78 KiB instead of 328 KiB of plain base64.
 */
function packedWasm() {
  return {
    name: 'packed-wasm',
    setup(b) {
      b.onLoad({ filter: /\.wasm$/ }, (args) => {
        const bytes = readFileSync(args.path);
        const packed = brotliCompressSync(bytes, { params: { [zlib.BROTLI_PARAM_QUALITY]: 11, [zlib.BROTLI_PARAM_SIZE_HINT]: bytes.length } });
        return { contents: `module.exports = ${JSON.stringify(packed.toString('base64'))};`, loader: 'js' };
      });
    },
  };
}

/**
 * Node built-ins only some images need (crypto for encryption, zlib for compressed clusters)
 * cost the guest ~4 ms to load at start, on every sandboxed op. This plugin gives the guest
 * stand-ins whose properties load the real module on first use; the names come from this
 * node at build time (a name missing at run time reads as undefined, as it would anyway).
 */
function lazyBuiltins(names) {
  const filter = new RegExp(`^(${names.join('|')})$`);
  return {
    name: 'lazy-builtins',
    setup(b) {
      // The stand-in's own require is the real module.
      b.onResolve({ filter }, (args) => (args.namespace === 'lazy-builtin' ? { path: args.path, external: true } : { path: args.path, namespace: 'lazy-builtin' }));
      b.onLoad({ filter: /.*/, namespace: 'lazy-builtin' }, async (args) => {
        const keys = Object.keys(await import(args.path)).filter((k) => k !== 'default');
        const contents = `let real;
const load = () => (real ??= require(${JSON.stringify(args.path)}));
const stand = {};
for (const key of ${JSON.stringify(keys)}) Object.defineProperty(stand, key, { get: () => load()[key], enumerable: true });
module.exports = stand;
`;
        return { contents, loader: 'js' };
      });
    },
  };
}

// The library is ESM (dist/index.mjs), split at dynamic imports so that an import loads only what
// it uses. The CLI is one CommonJS file (dist/cli.js; dist/package.json says commonjs): Node 20
// loads it ~15 ms faster than the same code as ESM chunks (one synchronous read and compile
// instead of the ESM loader's per-file rounds), and every command line pays its start.
const split = {
  ...common,
  entryPoints: [{ in: 'src/index.ts', out: 'index' }],
  outdir: 'dist',
  outExtension: { '.js': '.mjs' },
  splitting: true,
  chunkNames: 'chunks/[name]-[hash]',
  metafile: true,
  banner,
};

// Run as a program (npx, the bin link, the qemu-img alias), cli.js starts as a shell script that
// drops NODE_EXTRA_CA_CERTS and runs node on itself: Node 20 reads that certificate file before
// any JS runs (measured here: node's start 22 ms without it, 60 ms with it), and instar opens no
// network connection. To node, the second line is a string statement and a comment.
// --openssl-legacy-provider: CAST5 (a cipher qemu's LUKS takes) is in OpenSSL's legacy provider
// only. The sandboxed guest gets the flag from the host (sandbox/layers/permission.ts); with
// --sandbox=none the image is decrypted in this very process, which must have started with it.
// Measured: no cost at start (OpenSSL loads its providers when crypto is first used). Only where
// the building node knows the flag (an OpenSSL 3 build): a node that does not would refuse to start.
const legacy = process.allowedNodeEnvironmentFlags.has('--openssl-legacy-provider') ? ' --openssl-legacy-provider' : '';
const launcher = `#!/bin/sh\n":" //; unset NODE_EXTRA_CA_CERTS; exec node${legacy} "$0" "$@"\n`;
// cli.js itself is only a loader (src/cli/boot.ts): it compiles the CLI's code, dist/cli-bundle.js,
// with a V8 code cache (scripts/cli-code-cache.mjs, src/cli/code-cache.ts). The bundle is one function
// expression over what a CommonJS module gets, so that the build and the loader compile the same
// text.
const boot = { ...common, format: 'cjs', entryPoints: ['src/cli/boot.ts'], outfile: 'dist/cli.js', banner: { js: launcher } };
const cli = {
  ...common,
  format: 'cjs',
  entryPoints: ['src/cli/main.ts'],
  outfile: 'dist/cli-bundle.js',
  // As in the guest: the CLI compiles all of its one file at every start.
  alias: { 'hash-wasm': 'hash-wasm/dist/index.esm.js' },
  define: { 'import.meta.url': '__instarModuleUrl' },
  plugins: [opsApart(), lazyBuiltins(['node:crypto', 'node:zlib', 'node:module'])],
  banner: { js: "(function (exports, require, module, __filename, __dirname, __instarCodeCache) {const __instarModuleUrl = require('node:url').pathToFileURL(__filename).href;" },
  footer: { js: '})' },
};

/**
 * The op code (formats, ops) runs in the CLI's own process only with --sandbox=none: it is its
 * own file, dist/ops.cjs, which the CLI requires then, so a sandboxed command line does not
 * compile ~300 KB it never runs.
 */
function opsApart() {
  return {
    name: 'ops-apart',
    setup(b) {
      // A stand-in module that requires it: left as import('./ops.cjs'), Node would load it
      // through its ESM loader, which scans all of a CommonJS file for its export names (~15 ms).
      b.onResolve({ filter: /ops\/in-process\.ts$/ }, (args) => (args.importer.endsWith('run.ts') ? { path: 'ops', namespace: 'ops-apart' } : undefined));
      b.onLoad({ filter: /.*/, namespace: 'ops-apart' }, () => ({ contents: "module.exports = require('./ops.cjs');", loader: 'js' }));
      b.onResolve({ filter: /^\.\/ops\.cjs$/ }, () => ({ path: './ops.cjs', external: true }));
    },
  };
}
const inProcessOps = { ...common, format: 'cjs', entryPoints: ['src/ops/in-process.ts'], outfile: 'dist/ops.cjs', alias: cli.alias, define: cli.define, banner: { js: "const __instarModuleUrl = require('node:url').pathToFileURL(__filename).href;" } };

mkdirSync('dist/types', { recursive: true });
writeFileSync('dist/package.json', '{ "type": "commonjs" }\n');
// The library's declarations describe ESM (tsc writes them here at prepack).
writeFileSync('dist/types/package.json', '{ "type": "module" }\n');
const [library] = await Promise.all([
  build(split),
  buildAside(cli),
  buildAside(boot, 0o755),
  build(inProcessOps),
  // The guest is CommonJS (.cjs): measured ~5-10 ms faster to start than ESM, which matters
  // because every sandboxed op pays one guest start.
  build({ ...guest, entryPoints: ['src/guest/main.ts'], outfile: 'dist/guest.cjs' }),
  // Test-only guest: production ops plus hostile ones (test/sandbox), run by the sandbox tests.
  build({ ...guest, entryPoints: ['test/sandbox/hostile-guest.ts'], outfile: 'dist/test/hostile-guest.cjs' }),
]);
// The guests' loader and code caches (src/guest/loader.ts): ~9 ms off every guest start. First:
// the CLI's warm-up below runs real guests, and the loader runs only a stamped bundle.
await buildGuestCodeCaches(['dist/guest.cjs', 'dist/test/hostile-guest.cjs']);
// Their startup snapshots (scripts/guest-snapshot.ts, with the ops' warm-up): ~5 ms off an info or convert guest.
const snapshots = await import('./guest-snapshot.mjs');
await snapshots.buildGuestSnapshots(['dist/guest.cjs', 'dist/test/hostile-guest.cjs']);
// A package holds no blob (it is bound to one node binary): npm's postinstall makes one with this.
await snapshots.buildSnapshotInstaller('dist/guest-snapshot-install.mjs');
await writeCliCodeCache('dist/cli-bundle.js', 'dist/cli-bundle.cache');
removeStaleChunks(library.metafile);

/**
 * The CLI's files are written aside and renamed into place: the tests of other work run the CLI
 * while a build runs, and a file esbuild is still writing reads as empty or cut (an empty
 * cli.js is a silent exit 0).
 */
async function buildAside(options, mode = 0o644) {
  const result = await build({ ...options, write: false });
  for (const { path, contents } of result.outputFiles) {
    const aside = `${path}.${process.pid}`;
    writeFileSync(aside, contents, { mode });
    chmodSync(aside, mode);
    renameSync(aside, path);
  }
  return result;
}

/**
 * Chunks of earlier builds go, but only once they are a few minutes old: a CLI started just
 * before this build may still import the chunks its index.mjs names.
 */
function removeStaleChunks(metafile) {
  const current = new Set(Object.keys(metafile.outputs).map((p) => resolve(p)));
  const dir = 'dist/chunks';
  if (!existsSync(dir)) return;
  for (const name of readdirSync(dir)) {
    const file = resolve(dir, name);
    if (!current.has(file) && Date.now() - statSync(file).mtimeMs > 5 * 60_000) rmSync(file, { force: true });
  }
}

// The qemu-img alias: invoked under that name, instar prints "qemu-img:" in its messages.
mkdirSync('dist/alias', { recursive: true });
rmSync('dist/alias/qemu-img', { force: true });
symlinkSync('../cli.js', 'dist/alias/qemu-img');
// The library entry before it became index.mjs: a stale copy must not shadow the real one.
rmSync('dist/index.js', { force: true });
