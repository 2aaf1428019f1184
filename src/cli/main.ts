// instar's executable entry point (dist/cli.js, bundled as CommonJS): one command line from this process's argv.
import { runCommandLine } from './run.ts';

runCommandLine(process.argv.slice(2), {
  out: (t) => void process.stdout.write(t),
  err: (t) => void process.stderr.write(t),
  env: process.env,
  cwd: process.cwd(),
  argv1: process.argv[1] ?? 'instar',
  earlyGuest: true,
}).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`instar: internal error: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exitCode = 1;
  },
);
