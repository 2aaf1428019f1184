import { basename } from 'node:path';
import { commands } from '../host/commands/index.ts';
import { profileFor, NEWEST } from '../output/profile.ts';
import { DEFAULT_MAX_DEPTH } from '../host/paths/policy.ts';

// Minimal entry point; the getopt_long-compatible parser replaces the argument handling here.
async function main(): Promise<number> {
  const progname = basename(process.argv[1] ?? 'instar').replace(/\.js$/, '');
  const [name, ...rest] = process.argv.slice(2);
  const command = name ? commands[name] : undefined;
  if (!command) {
    process.stderr.write(`${progname}: Command not found: ${name}\n`);
    return 1;
  }
  const options = new Map<string, string[]>();
  const args: string[] = [];
  for (const a of rest) {
    if (a.startsWith('--sandbox=')) options.set('sandbox', [a.slice(10)]);
    else args.push(a);
  }
  const mode = (options.get('sandbox')?.[0] ?? 'auto') as 'auto' | 'strict' | 'none';
  return command({ name, options, args }, {
    progname,
    out: (t) => process.stdout.write(t),
    err: (t) => process.stderr.write(t),
    profile: profileFor(NEWEST),
    globals: { debug: false, allowPaths: [], unsafeQuirks: false, ignoreQuirks: false },
    run: { mode },
    policy: { allow: [], maxDepth: DEFAULT_MAX_DEPTH },
  });
}

main().then((code) => { process.exitCode = code; });
