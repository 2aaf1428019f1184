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
  (code) => exitWhenWritten(code),
  (e: unknown) => {
    process.stderr.write(`instar: internal error: ${e instanceof Error ? e.message : String(e)}\n`);
    exitWhenWritten(1);
  },
);

/**
 * Ends the process as soon as the command's text is out. The command has finished everything
 * it does (outputs fsynced, early guests killed, early files closed or removed): left to end by
 * itself, node would still wait for the pipes of the guests it has killed to close and then
 * tear its heap down, ~5-10 ms. A guest still dying dies anyway (bwrap --die-with-parent, its
 * process group SIGKILLed). stdout and stderr are synchronous on Linux for files, pipes and
 * terminals; anything still queued is waited for.
 */
function exitWhenWritten(code: number): void {
  process.exitCode = code;
  const queued = [process.stdout, process.stderr].filter((s) => s.writableLength > 0);
  let left = queued.length;
  if (left === 0) process.exit();
  for (const s of queued) s.once('drain', () => --left === 0 && process.exit());
}
