// Calls openReferenced once and prints the outcome as JSON; strace-unit.test.ts traces it. The two
// access() calls on marker paths bracket the call in the trace.
import { existsSync } from 'node:fs';
import { openReferenced, startChain } from '../../src/host/paths/resolve.ts';

const [top, name, role, allow] = process.argv.slice(2);
existsSync('/instar-trace-begin');
let outcome;
try {
  const r = openReferenced(name, top, role as 'backing' | 'data-file' | 'extent', { allow: JSON.parse(allow) as string[], maxDepth: 16 }, startChain(top));
  outcome = { ok: true, resolved: r.resolved };
} catch (e) {
  outcome = { ok: false, message: (e as Error).message };
}
existsSync('/instar-trace-end');
process.stdout.write(JSON.stringify(outcome) + '\n');
