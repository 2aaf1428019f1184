// qemu-img prints names taken from an image (backing file, snapshot tags, bitmap names) with a bare
// "%s": an image can then move the cursor, recolour the terminal or forge whole output lines. instar
// prints printable text unchanged and writes control characters as visible escapes instead.

/** C0 and C1 controls, DEL, and the bidirectional overrides that reorder what a terminal shows. */
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/gu;

export function escapeForTerminal(s: string): string {
  return s.replace(UNSAFE, (ch) => {
    const cp = ch.codePointAt(0) as number;
    return cp < 0x100 ? `\\x${cp.toString(16).padStart(2, '0')}` : `\\u${cp.toString(16).padStart(4, '0')}`;
  });
}
