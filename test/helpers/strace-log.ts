// Parsing of `strace -f -o LOG` output, shared by the path-policy and hostile-image suites.

export interface TracedCall {
  pid: number;
  syscall: string;
  /** The first string argument: the path of every %file call (readlink's result is not it). */
  path?: string;
  /** Where a relative path is looked up from: `cwd` or another directory fd. */
  relativeTo: 'cwd' | 'dirfd';
  line: string;
}

/** strace's C-style escapes in a quoted argument, undone. */
function unescape(s: string): string {
  return s.replace(/\\(x[0-9a-fA-F]{2}|[0-7]{1,3}|.)/g, (_, e: string) => {
    if (e[0] === 'x') return String.fromCharCode(parseInt(e.slice(1), 16));
    if (/^[0-7]+$/.test(e)) return String.fromCharCode(parseInt(e, 8));
    return ({ n: '\n', t: '\t', r: '\r' } as Record<string, string>)[e] ?? e;
  });
}

/** Parses an `strace -f` log into calls (resumed halves of interrupted calls are skipped). */
export function parseStrace(log: string): TracedCall[] {
  const calls: TracedCall[] = [];
  for (const line of log.split('\n')) {
    const m = /^(\d+)\s+(\w+)\((.*)$/.exec(line);
    if (!m) continue;
    const str = /"((?:[^"\\]|\\.)*)"/.exec(m[3]);
    // openat/statx/newfstatat/readlinkat… take a directory fd first; AT_FDCWD means the cwd.
    const dirfd = /^(\d+)</.exec(m[3]) ?? /^(\d+),/.exec(m[3]);
    calls.push({ pid: Number(m[1]), syscall: m[2], path: str ? unescape(str[1]) : undefined, relativeTo: dirfd ? 'dirfd' : 'cwd', line });
  }
  return calls;
}
