// No array spread into call arguments in src/ (issue 9, fault 5): `a.push(...b)`,
// `Math.max(...b)` or `f(...b)` pass every element as an argument and
// overflow the stack when b is large (a 35 000-value list, a 50 MB filter,
// 10 000 interfaces). Use appendAll / maxOf (src/util/arrays.ts) or a loop.
// Spreads of data that is small by construction are listed in BOUNDED, each
// with the reason; the check fails on anything new and on a listed entry
// that no longer occurs.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const REPO = join(import.meta.dirname, '..', '..');

/** file: spread expression text -> why it is bounded. */
const BOUNDED: Record<string, string> = {
  'src/frames/bytes.ts: ...parts': 'the parts of one frame header checksum (a handful)',
  'src/ir/print.ts: ...mac': 'the printed fields of one test (at most 3)',
  'src/ir/print.ts: ...num': 'the printed fields of one test (at most 3)',
  'src/ir/print.ts: ...ip': 'the printed fields of one test (at most 3)',
  'src/ir/print.ts: ...range': 'the printed fields of one test (at most 3)',
  'src/ir/print.ts: ...iprange': 'the printed fields of one test (at most 3)',
  'src/backends/nft/l3.ts: ...r.state.map': 'the connection states of one rule (at most 4)',
  'src/backends/nft/shared.ts: ...vals': 'the varying fields of one rule (a few)',
  'src/backends/nft/shared.ts: ...slots.map': 'the per-interface fields of one rule (a few)',
  'src/backends/nft/skeleton.ts: ...dropChain': 'the three commands of one drop chain',
  'src/backends/nft/skeleton.ts: ...l3.objects': 'the L3 objects of the bridge skeleton (six)',
  'src/cli/args.ts: ...rows.map': "the options of one command",
  'src/cli/main.ts: ...[...COMMANDS.keys': 'the command names',
  'src/host/nfnl/socket.ts: ...parseReplies': 'the replies in one receive buffer (bounded by its size)',
  'src/host/nfnl/transact.ts: ...': 'zero or one element',
  'src/lab/frames/corpus-rules.ts: ...stpOps': 'the STP fields of one test rule',
  'src/lab/vm/image.ts: ...modules.flatMap': 'the kernel modules of the test guest image (a few)',
};

function tsFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((e) => {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) return tsFiles(p);
    return p.endsWith('.ts') ? [p] : [];
  });
}

/** `file: ...expr` for every spread argument of a call or `new` in src/ (the expression up to its first parenthesis). */
function callSpreads(): string[] {
  const out: string[] = [];
  for (const file of tsFiles(join(REPO, 'src'))) {
    const sf = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, true);
    const visit = (n: ts.Node): void => {
      if ((ts.isCallExpression(n) || ts.isNewExpression(n)) && n.arguments) {
        for (const a of n.arguments) {
          if (ts.isSpreadElement(a)) out.push(`${relative(REPO, file)}: ...${a.expression.getText(sf).split('(')[0]}`);
        }
      }
      ts.forEachChild(n, visit);
    };
    visit(sf);
  }
  return [...new Set(out)].sort();
}

describe('src/ spreads no unbounded array into call arguments', () => {
  const found = callSpreads();
  it('finds none but the bounded ones', () => {
    expect(found.filter((f) => !(f in BOUNDED)), 'use appendAll/maxOf from src/util/arrays.ts or a loop').toEqual([]);
  });
  it('lists no bounded spread that is gone', () => {
    expect(Object.keys(BOUNDED).filter((k) => !found.includes(k))).toEqual([]);
  });
});
