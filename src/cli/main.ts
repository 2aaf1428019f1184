// instar's executable code (dist/cli-bundle.js, bundled as CommonJS and loaded by dist/cli.js,
// boot.ts): one command line from this process's argv.
import { runCommandLine } from './run.ts';

/** How boot.ts fared with the V8 code cache (code-cache.ts); --debug prints it. */
declare const __instarCodeCache: string | undefined;

runCommandLine(process.argv.slice(2), {
  out: (t) => void process.stdout.write(t),
  err: (t) => void process.stderr.write(t),
  env: process.env,
  cwd: process.cwd(),
  argv1: process.argv[1] ?? 'instar',
  earlyGuest: true,
  codeCache: typeof __instarCodeCache === 'string' ? __instarCodeCache : undefined,
}).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`instar: internal error: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exitCode = 1;
  },
);
