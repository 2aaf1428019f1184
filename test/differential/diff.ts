// A small line diff (longest common subsequence) printed in unified style, so a failing
// differential test shows exactly which lines instar got wrong.

export function unifiedDiff(expected: string, actual: string, expectedLabel: string, actualLabel: string, context = 3): string {
  const a = expected.split('\n');
  const b = actual.split('\n');
  // lcs[i][j] = length of the LCS of a[i..] and b[j..]
  const lcs: number[][] = Array.from({ length: a.length + 1 }, () => new Array<number>(b.length + 1).fill(0));
  for (let i = a.length - 1; i >= 0; i--) {
    for (let j = b.length - 1; j >= 0; j--) {
      lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  const ops: { kind: ' ' | '-' | '+'; line: string }[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    if (i < a.length && j < b.length && a[i] === b[j]) {
      ops.push({ kind: ' ', line: a[i++] });
      j++;
    } else if (i < a.length && (j >= b.length || lcs[i + 1][j] >= lcs[i][j + 1])) {
      ops.push({ kind: '-', line: a[i++] });
    } else {
      ops.push({ kind: '+', line: b[j++] });
    }
  }
  const out = [`--- ${expectedLabel}`, `+++ ${actualLabel}`];
  let k = 0;
  while (k < ops.length) {
    if (ops[k].kind === ' ') {
      k++;
      continue;
    }
    const start = Math.max(0, k - context);
    let end = k;
    // Extend the hunk while changes are closer than 2 * context lines apart.
    while (end < ops.length) {
      let next = end;
      while (next < ops.length && ops[next].kind === ' ') next++;
      if (next >= ops.length || next - end > 2 * context) break;
      while (next < ops.length && ops[next].kind !== ' ') next++;
      end = next;
    }
    const stop = Math.min(ops.length, end + context);
    out.push(`@@ line ${start + 1} @@`);
    for (let n = start; n < stop; n++) out.push(ops[n].kind + JSON.stringify(ops[n].line).slice(1, -1));
    k = stop;
  }
  return out.join('\n');
}
