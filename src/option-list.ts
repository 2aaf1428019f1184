// qemu's option-list syntax ("k=v,flag,nok", ",," for a comma), split into items: pure, shared
// by the host's option checks and the format code that reads an option's text (luks/key-slots.ts).
/** The items of an option list in order: "k=v", a flag "k" (on) or "nok" (off); ",," is a comma. */
export function optionItems(text: string): [string, string][] {
  const items: [string, string][] = [];
  let pos = 0;
  while (pos < text.length) {
    let end = pos;
    while (end < text.length && text[end] !== '=' && text[end] !== ',') end++;
    const name = text.slice(pos, end);
    if (text[end] !== '=') {
      items.push(name.startsWith('no') ? [name.slice(2), 'off'] : [name, 'on']);
      pos = end + 1;
      continue;
    }
    let value = '';
    let i = end + 1;
    for (; i < text.length; i++) {
      if (text[i] === ',') {
        if (text[i + 1] !== ',') break;
        i++;
      }
      value += text[i];
    }
    items.push([name, value]);
    pos = i + 1;
  }
  return items;
}
