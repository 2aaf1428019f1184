// qemu's vmdk probe: a sparse magic, or a text file whose first non-comment, non-blank line is
// "version=1|2|3" (LF or CRLF).
import { VMDK3_MAGIC, VMDK4_MAGIC } from './header.ts';

export function probeVmdk(head: Uint8Array): number {
  if (head.length < 4) return 0;
  const magic = new DataView(head.buffer, head.byteOffset, 4).getUint32(0, false);
  if (magic === VMDK3_MAGIC || magic === VMDK4_MAGIC) return 100;
  const s = Buffer.from(head.buffer, head.byteOffset, head.length).toString('latin1');
  let p = 0;
  while (p < s.length) {
    if (s[p] === '#') {
      const nl = s.indexOf('\n', p);
      p = nl < 0 ? s.length + 1 : nl + 1;
      continue;
    }
    if (s[p] === ' ') {
      while (p < s.length && s[p] === ' ') p++;
      if (p < s.length && s[p] === '\r') p++;
      if (p === s.length || s[p] !== '\n') return 0;
      p++;
      continue;
    }
    return /^version=[123]\r?\n/.test(s.slice(p, p + 11)) ? 100 : 0;
  }
  return 0;
}
