// The CLI bundle's V8 code cache (src/cli/code-cache.ts), made at build time by this node (another
// node version ignores it). First a plain one: the bundle's top level compiled. Then, in a child
// process, a warm one: the bundle run on a throwaway info and convert, so that the cache also
// holds the bytecode of the functions a command line runs (measured: ~6 ms less host CPU per
// convert than the plain cache). If the warm-up fails in any way the plain cache stays.
// Run as `node scripts/cli-code-cache.mjs --warm BUNDLE OUT`, it is that child.
import { build, transform } from 'esbuild';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** src/cli/code-cache.ts, compiled for this script by esbuild (the build has no TS loader). */
async function codeCacheModule() {
  const root = join(dirname(fileURLToPath(import.meta.url)), '..');
  const built = await build({ entryPoints: [join(root, 'src/cli/code-cache.ts')], bundle: true, platform: 'node', format: 'esm', target: 'node20', write: false, logLevel: 'warning' });
  return import(`data:text/javascript;base64,${Buffer.from(built.outputFiles[0].contents).toString('base64')}`);
}

/** Written aside and renamed: a CLI starting meanwhile reads the old or the new file whole. */
function replaceFile(file, bytes) {
  const aside = `${file}.${process.pid}`;
  writeFileSync(aside, bytes);
  renameSync(aside, file);
}

export async function writeCliCodeCache(bundle, cacheFile) {
  await asciiComments(bundle);
  const { makeCodeCache } = await codeCacheModule();
  replaceFile(cacheFile, makeCodeCache(readFileSync(bundle), resolve(bundle)));
  const warm = `${cacheFile}.warm.${process.pid}`;
  const r = spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--warm', bundle, warm], { stdio: 'ignore', timeout: 60_000 });
  try {
    if (r.status === 0 && existsSync(warm)) replaceFile(cacheFile, readFileSync(warm));
    else console.warn(`cli code cache: the warm-up run failed (${r.error?.message ?? `status ${r.status}, signal ${r.signal}`}); the plain cache stays`);
  } finally {
    rmSync(warm, { force: true });
  }
}

/**
 * esbuild escapes non-ASCII text in strings but leaves it in the comments it keeps (a "≥" or
 * "…" here and there). One such character makes V8 hold the whole source as UTF-16 and costs
 * a full UTF-8 decode at every start (~1.7 ms against ~0.4 ms for latin1, code-cache.ts). They
 * become "?" only when that changes nothing but comments: the bundle minified (which drops
 * comments) must read the same before and after; regular expressions and String.raw keep theirs.
 */
async function asciiComments(bundle) {
  const text = readFileSync(bundle, 'utf8');
  const ascii = text.replace(/[^\x00-\x7f]/g, '?');
  if (ascii === text) return;
  const code = async (t) => (await transform(t, { minifyWhitespace: true, format: 'cjs', logLevel: 'silent' })).code;
  if ((await code(text)) === (await code(ascii))) replaceFile(bundle, ascii);
}

/** The child: runs the bundle as dist/cli.js does, twice, then saves what V8 compiled. */
async function warmUp(bundle, out) {
  const { compileBundle, packCodeCache } = await codeCacheModule();
  const file = resolve(bundle);
  const source = readFileSync(file);
  const script = compileBundle(source, file);
  const main = script.runInThisContext();
  // The CLI ends its process once a command is done (main.ts): here that only marks it done.
  let exited;
  process.exit = (code) => {
    exited = code ?? process.exitCode ?? 0;
  };
  const dir = mkdtempSync(join(tmpdir(), 'instar-warm-'));
  try {
    const disk = join(dir, 'disk.raw');
    const data = Buffer.alloc(1 << 20);
    data.fill(0x5a, 4096, 65536);
    writeFileSync(disk, data);
    for (const args of [['info', '-f', 'raw', disk], ['convert', '-f', 'raw', '-O', 'raw', disk, join(dir, 'copy.raw')]]) {
      process.argv = [process.execPath, join(dirname(file), 'cli.js'), ...args];
      exited = undefined;
      main({}, createRequire(file), { exports: {} }, file, dirname(file), 'warming');
      await settled(() => exited !== undefined);
      if (exited !== 0) throw new Error(`${args[0]} exited with ${exited}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  writeFileSync(out, packCodeCache(source, script.createCachedData()));
}

/** Until the command line has ended and its guests and their pipes are gone. */
async function settled(ended) {
  const busy = () => !ended() || process.getActiveResourcesInfo().some((r) => r === 'ProcessWrap' || r === 'PipeWrap');
  while (busy()) await new Promise((r) => setTimeout(r, 2));
}

if (process.argv[2] === '--warm') {
  const exit = process.exit;
  warmUp(process.argv[3], process.argv[4]).then(
    () => exit(0),
    (e) => {
      console.error(e);
      exit(1);
    },
  );
}
