// qemu's option-string syntax (util/qemu-option.c), as --image-opts takes it: "key=value" items
// separated by ',', where ",," stands for a literal comma inside a value; an item without '=' is
// the implied first option ("file" for --image-opts) when it comes first, otherwise a flag
// ("name" → on, "noname" → off). A later duplicate replaces an earlier one, as in qemu's QDict.
import type { SnapshotChoice } from '../../ops/convert/sources.ts';

export function parseQemuOpts(text: string, impliedFirst?: string): Map<string, string> {
  const opts = new Map<string, string>();
  let pos = 0;
  let first = true;
  while (pos < text.length) {
    const nameEnd = findFirst(text, pos, '=,');
    let key: string;
    let value: string;
    if (text[nameEnd] !== '=') {
      if (first && impliedFirst !== undefined) {
        key = impliedFirst;
        [value, pos] = readValue(text, pos);
      } else {
        const flag = text.slice(pos, nameEnd);
        [key, value] = flag.startsWith('no') ? [flag.slice(2), 'off'] : [flag, 'on'];
        pos = nameEnd < text.length ? nameEnd + 1 : nameEnd;
      }
    } else {
      key = text.slice(pos, nameEnd);
      [value, pos] = readValue(text, nameEnd + 1);
    }
    opts.delete(key);
    opts.set(key, value);
    first = false;
  }
  return opts;
}

function findFirst(text: string, from: number, chars: string): number {
  let i = from;
  while (i < text.length && !chars.includes(text[i])) i++;
  return i;
}

/** A value up to the next single ',' (",," is a literal comma); returns it and the next position. */
function readValue(text: string, from: number): [string, number] {
  let value = '';
  let i = from;
  while (i < text.length) {
    if (text[i] === ',') {
      if (text[i + 1] !== ',') return [value, i + 1];
      i++;
    }
    value += text[i];
    i++;
  }
  return [value, i];
}

/**
 * -l of convert and measure: "snapshot.id=…,snapshot.name=…" (qemu's internal_snapshot_opts) or a
 * bare id-or-name; `invalidKey` names the first other key, which each command words its own way.
 */
export function parseSnapshotParam(text: string): SnapshotChoice | { invalidKey: string } {
  if (!text.startsWith('snapshot.')) return { idOrName: text };
  const choice: SnapshotChoice = {};
  for (const [key, value] of parseQemuOpts(text)) {
    if (key === 'snapshot.id') choice.id = value;
    else if (key === 'snapshot.name') choice.name = value;
    else return { invalidKey: key };
  }
  return choice;
}
