// dist/cli.js: loads the CLI bundle (dist/cli-bundle.js, from main.ts) with the build's V8 code
// cache (code-cache.ts). The bundle is one function expression taking what a CommonJS module
// gets, plus how the cache fared (printed by --debug).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { compileWithCache } from './code-cache.ts';

type BundleMain = (exports: unknown, req: NodeJS.Require, mod: NodeJS.Module, filename: string, dirname: string, codeCache: string) => void;

const bundle = join(__dirname, 'cli-bundle.js');
let source: Buffer;
try {
  source = readFileSync(bundle);
} catch (e) {
  process.stderr.write(`instar: cannot read ${bundle} (${(e as Error).message}); reinstall instar\n`);
  process.exit(1);
}
let cache: Buffer | undefined;
try {
  cache = readFileSync(join(__dirname, 'cli-bundle.cache'));
} catch {
  cache = undefined;
}
const { script, use } = compileWithCache(source, cache, bundle);
// The bundle sits beside this file: this module's require resolves its './ops.cjs' alike.
(script.runInThisContext() as BundleMain)(exports, require, module, bundle, __dirname, use);
