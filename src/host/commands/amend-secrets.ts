// The secrets an amend's option list names as new-secret or old-secret (LUKS key slots; qcow2's
// encrypt.-prefixed too), base64 by id for the guest. An id no --object defines is left out: the
// guest reports it where qemu looks it up, after the checks that come first.
import { parseSecretObjects } from '../secrets.ts';
import { optionItems } from './measure-options.ts';

const NAMES = new Set(['new-secret', 'old-secret', 'encrypt.new-secret', 'encrypt.old-secret']);

export function namedSecrets(list: string, objects: readonly string[]): Record<string, string> {
  const ids = new Set(optionItems(list).filter(([name]) => NAMES.has(name)).map(([, id]) => id));
  const secrets = parseSecretObjects(objects);
  const named: Record<string, string> = {};
  for (const id of ids) {
    const secret = secrets.get(id);
    if (secret) named[id] = secret.toString('base64');
  }
  return named;
}
