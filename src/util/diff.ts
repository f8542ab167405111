// A unified diff of two texts, line by line (longest common subsequence;
// meant for documents of a few thousand lines at most, such as domain XML).

type Op = { kind: ' ' | '-' | '+'; line: string; a: number; b: number };

function lcsOps(a: readonly string[], b: readonly string[]): Op[] {
  const n = a.length;
  const m = b.length;
  // lengths of the LCS of a[i:] and b[j:], row by row
  const dp: Uint32Array[] = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) {
    const row = dp[i] as Uint32Array;
    const below = dp[i + 1] as Uint32Array;
    for (let j = m - 1; j >= 0; j--) row[j] = a[i] === b[j] ? (below[j + 1] as number) + 1 : Math.max(below[j] as number, row[j + 1] as number);
  }
  const ops: Op[] = [];
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && a[i] === b[j]) ops.push({ kind: ' ', line: a[i++] as string, a: i, b: ++j });
    else if (j < m && (i >= n || (dp[i] as Uint32Array)[j + 1]! >= (dp[i + 1] as Uint32Array)[j]!)) ops.push({ kind: '+', line: b[j++] as string, a: i, b: j });
    else ops.push({ kind: '-', line: a[i++] as string, a: i, b: j });
  }
  return ops;
}

/** `--- a` / `+++ b` and hunks with `context` lines around each change; '' when the texts are equal. */
export function unifiedDiff(before: string, after: string, names: { a: string; b: string }, context = 3): string {
  if (before === after) return '';
  const split = (t: string): string[] => (t.endsWith('\n') ? t.slice(0, -1) : t).split('\n');
  const ops = lcsOps(split(before), split(after));
  const out = [`--- ${names.a}`, `+++ ${names.b}`];
  let k = 0;
  while (k < ops.length) {
    while (k < ops.length && ops[k]?.kind === ' ') k++;
    if (k >= ops.length) break;
    const start = Math.max(0, k - context);
    // extend the hunk while the next change is within 2*context unchanged lines
    let end = k;
    for (;;) {
      while (end < ops.length && ops[end]?.kind !== ' ') end++;
      let same = end;
      while (same < ops.length && ops[same]?.kind === ' ') same++;
      if (same < ops.length && same - end <= 2 * context) end = same;
      else {
        end = Math.min(ops.length, end + context);
        break;
      }
    }
    const hunk = ops.slice(start, end);
    const aLines = hunk.filter((o) => o.kind !== '+').length;
    const bLines = hunk.filter((o) => o.kind !== '-').length;
    const first = hunk[0] as Op;
    // a hunk starts at its first line of each side; an empty side names the line before it
    const aFrom = hunk.find((o) => o.kind !== '+')?.a ?? first.a;
    const bFrom = hunk.find((o) => o.kind !== '-')?.b ?? first.b;
    out.push(`@@ -${aFrom},${aLines} +${bFrom},${bLines} @@`);
    for (const o of hunk) out.push(`${o.kind}${o.line}`);
    k = end;
  }
  return out.join('\n') + '\n';
}
