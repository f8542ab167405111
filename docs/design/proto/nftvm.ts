// A walker over the kernel's own view of a ruleset: the bytecode that
// `nft --debug=netlink list table bridge nwf_fast` prints (every rule as its
// expressions, every set with its elements in kernel byte order). It runs one
// frame through the base chains the way nft_do_chain does (expressions in
// order, a failing one ends the rule, verdicts, jump/goto stack, implicit
// return at a chain's end, base chain policy accept) and counts what the
// kernel does: rules entered, expressions, loads, compares, set lookups,
// jumps. walk.ts checks the rules it finds matching against the kernel's
// trace (nft monitor trace) for the same frame.
//
// Only the expressions nwf-fast's bridge rulesets use are known; any other is
// an error, never guessed.

export interface NftSet {
  name: string;
  /** Element keys (bytes, as the kernel compares them) -> data ('' for plain sets; a verdict for vmaps). */
  elements: { key: Uint8Array; data: string }[];
}

export type Expr =
  | { op: 'payload'; base: 'link' | 'network'; offset: number; len: number; dreg: number }
  | { op: 'meta'; key: string; dreg: number }
  | { op: 'byteorder'; reg: number; size: number }
  | { op: 'cmp'; cmp: 'eq' | 'neq' | 'gte' | 'gt' | 'lte' | 'lt'; reg: number; data: Uint8Array }
  | { op: 'bitwise'; reg: number; len: number; mask: Uint8Array; xor: Uint8Array }
  | { op: 'lookup'; reg: number; set: string; vmap: boolean; inv: boolean }
  | { op: 'immediate'; verdict: string }
  | { op: 'objref-map'; reg: number; set: string }
  | { op: 'counter' };

export interface NftRule {
  chain: string;
  handle: number;
  exprs: Expr[];
  text: string;
}

export interface Program {
  sets: Map<string, NftSet>;
  chains: Map<string, NftRule[]>;
}

/** Little-endian 32-bit words as the debug output prints them -> bytes. */
function words(ws: readonly string[]): Uint8Array {
  const b = new Uint8Array(ws.length * 4);
  ws.forEach((w, i) => {
    const v = parseInt(w, 16) >>> 0;
    b[i * 4] = v & 255;
    b[i * 4 + 1] = (v >>> 8) & 255;
    b[i * 4 + 2] = (v >>> 16) & 255;
    b[i * 4 + 3] = (v >>> 24) & 255;
  });
  return b;
}

function parseExpr(line: string): Expr {
  const s = line.trim().replace(/^\[ /, '').replace(/ \]$/, '');
  let m: RegExpExecArray | null;
  if ((m = /^payload load (\d+)b @ (link|network) header \+ (\d+) => reg (\d+)$/.exec(s))) return { op: 'payload', base: m[2] as 'link' | 'network', len: Number(m[1]), offset: Number(m[3]), dreg: Number(m[4]) };
  if ((m = /^meta load (\w+) => reg (\d+)$/.exec(s))) return { op: 'meta', key: m[1] as string, dreg: Number(m[2]) };
  if ((m = /^byteorder reg (\d+) = hton\(reg \d+, (\d+), \d+\)$/.exec(s))) return { op: 'byteorder', reg: Number(m[1]), size: Number(m[2]) };
  if ((m = /^cmp (eq|neq|gte|gt|lte|lt) reg (\d+) ((?:0x[0-9a-f]+ ?)+)$/.exec(s))) return { op: 'cmp', cmp: m[1] as 'eq', reg: Number(m[2]), data: words((m[3] as string).trim().split(' ')) };
  if ((m = /^bitwise reg (\d+) = \( reg \d+ & ((?:0x[0-9a-f]+ ?)+)\) \^ ((?:0x[0-9a-f]+ ?)+)$/.exec(s))) {
    const mask = words((m[2] as string).trim().split(' '));
    return { op: 'bitwise', reg: Number(m[1]), len: mask.length, mask, xor: words((m[3] as string).trim().split(' ')) };
  }
  if ((m = /^lookup reg (\d+) set (\S+)( dreg 0)? (0x[0-9a-f]+)$/.exec(s))) return { op: 'lookup', reg: Number(m[1]), set: m[2] as string, vmap: !!m[3], inv: (parseInt(m[4] as string, 16) & 1) === 1 };
  if ((m = /^immediate reg 0 (.+)$/.exec(s))) return { op: 'immediate', verdict: (m[1] as string).replace(' -> ', ' ') };
  if ((m = /^objref sreg (\d+) set (\S+)$/.exec(s))) return { op: 'objref-map', reg: Number(m[1]), set: m[2] as string };
  if (/^counter pkts \d+ bytes \d+$/.test(s)) return { op: 'counter' };
  throw new Error(`nftvm: unknown expression: ${s}`);
}

/** Parses `nft --debug=netlink list table ...` output (sets with elements, then rules). */
export function parseProgram(text: string, family: 'bridge' | 'netdev' = 'bridge', table = 'nwf_fast'): Program {
  const sets = new Map<string, NftSet>();
  const chains = new Map<string, NftRule[]>();
  let set: NftSet | undefined;
  let rule: NftRule | undefined;
  const setRe = new RegExp(`^${family} ${table} @(\\S+)$`);
  const ruleRe = new RegExp(`^${family} ${table} (\\S+) (\\d+)( \\d+)?$`);
  for (const raw of text.split('\n')) {
    let m: RegExpExecArray | null;
    if ((m = setRe.exec(raw))) {
      rule = undefined;
      set = sets.get(m[1] as string) ?? { name: m[1] as string, elements: [] };
      sets.set(set.name, set);
      continue;
    }
    if ((m = ruleRe.exec(raw))) {
      set = undefined;
      rule = { chain: m[1] as string, handle: Number(m[2]), exprs: [], text: '' };
      const list = chains.get(rule.chain) ?? [];
      list.push(rule);
      chains.set(rule.chain, list);
      continue;
    }
    if (set && (m = /^\s+element ((?:[0-9a-f]{8} ?)+) : (?:(.*?) )?0 \[end\]$/.exec(raw))) {
      set.elements.push({ key: words((m[1] as string).trim().split(' ')), data: (m[2] ?? '').replace(' -> ', ' ') });
      continue;
    }
    if (rule && /^\s+\[ .* \]$/.test(raw)) {
      rule.exprs.push(parseExpr(raw));
      continue;
    }
    if (/^table /.test(raw)) break; // the human listing follows
  }
  return { sets, chains };
}

export interface Frame {
  /** The whole frame from the Ethernet header (untagged). */
  bytes: Uint8Array;
  iif: string;
  oif: string;
  ifindex: ReadonlyMap<string, number>;
}

export interface Step {
  chain: string;
  handle: number;
  /** Expressions executed before the rule ended. */
  exprs: number;
  matched: boolean;
  verdict?: string;
}

export interface Cost {
  rules: number;
  exprs: number;
  loads: number;
  cmps: number;
  lookups: number;
  /** jump / goto taken, and returns (explicit or at a chain's end). */
  jumps: number;
  gotos: number;
  returns: number;
}

export interface WalkResult {
  verdict: 'accept' | 'drop';
  steps: Step[];
  cost: Cost;
  /** Named counters a drop counted into (objref maps resolved by the interface name). */
  counted: string[];
}

const REG_BYTES = 4 * 16 + 16 * 4;
const regOffset = (r: number): number => {
  if (r >= 1 && r <= 4) return (r - 1) * 16;
  if (r >= 8 && r <= 23) return (r - 8) * 4;
  throw new Error(`nftvm: register ${r}`);
};

function ifnameBytes(name: string): Uint8Array {
  const b = new Uint8Array(16);
  b.set(new TextEncoder().encode(name).subarray(0, 15));
  return b;
}

const eqBytes = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && a.every((x, i) => x === b[i]);

function compare(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return (a[i] as number) - (b[i] as number);
  return 0;
}

/** Runs `frame` through base chain `base` (the hook); returns the hook's verdict and what it cost. */
export function walkHook(p: Program, base: string, frame: Frame, hook: 'pre' | 'post'): WalkResult {
  const regs = new Uint8Array(REG_BYTES);
  const lens = new Map<number, number>();
  const cost: Cost = { rules: 0, exprs: 0, loads: 0, cmps: 0, lookups: 0, jumps: 0, gotos: 0, returns: 0 };
  const steps: Step[] = [];
  const counted: string[] = [];
  const link = frame.bytes.subarray(0, 14);
  const net = frame.bytes.subarray(14);
  const write = (r: number, data: Uint8Array): void => {
    const o = regOffset(r);
    // nft_payload_eval zeroes the register's last 32-bit word before a copy of a length not a multiple of 4
    if (data.length % 4) regs.fill(0, o + data.length - (data.length % 4), o + data.length - (data.length % 4) + 4);
    regs.set(data, o);
    lens.set(r, data.length);
  };
  const read = (r: number, n: number): Uint8Array => regs.slice(regOffset(r), regOffset(r) + n);
  const stack: { chain: string; index: number }[] = [];
  let chain = base;
  let index = 0;
  for (let guard = 0; guard < 10_000; guard++) {
    const rules = p.chains.get(chain) ?? [];
    if (index >= rules.length) {
      const back = stack.pop();
      if (!back) return { verdict: 'accept', steps, cost, counted }; // base chain policy accept
      cost.returns++;
      chain = back.chain;
      index = back.index;
      continue;
    }
    const rule = rules[index] as NftRule;
    index++;
    cost.rules++;
    let n = 0;
    let broke = false;
    let verdict: string | undefined;
    for (const e of rule.exprs) {
      n++;
      cost.exprs++;
      if (e.op === 'payload') {
        cost.loads++;
        const src = e.base === 'link' ? link : net;
        if (e.offset + e.len > src.length) {
          broke = true;
          break;
        }
        write(e.dreg, src.subarray(e.offset, e.offset + e.len));
      } else if (e.op === 'meta') {
        cost.loads++;
        if (e.key === 'iifname' || e.key === 'oifname') write(e.dreg, ifnameBytes(e.key === 'iifname' ? frame.iif : frame.oif));
        else if (e.key === 'iif' || e.key === 'oif') {
          const ix = frame.ifindex.get(e.key === 'iif' ? frame.iif : frame.oif) ?? 0;
          write(e.dreg, new Uint8Array(new Uint32Array([ix]).buffer));
        } else if (e.key === 'len') write(e.dreg, new Uint8Array(new Uint32Array([net.length]).buffer));
        else if (e.key === 'protocol') write(e.dreg, link.subarray(12, 14));
        else if (e.key === 'iiftype' || e.key === 'oiftype') write(e.dreg, new Uint8Array([1, 0])); // ARPHRD_ETHER, host order
        else throw new Error(`nftvm: meta ${e.key}`);
      } else if (e.op === 'byteorder') {
        const o = regOffset(e.reg);
        regs.subarray(o, o + e.size).reverse();
      } else if (e.op === 'bitwise') {
        const o = regOffset(e.reg);
        for (let i = 0; i < e.len; i++) regs[o + i] = ((regs[o + i] as number) & (e.mask[i] as number)) ^ (e.xor[i] as number);
      } else if (e.op === 'cmp') {
        cost.cmps++;
        const len = lens.get(e.reg) ?? e.data.length;
        const d = compare(read(e.reg, len), e.data.subarray(0, len));
        const ok = { eq: d === 0, neq: d !== 0, gte: d >= 0, gt: d > 0, lte: d <= 0, lt: d < 0 }[e.cmp];
        if (!ok) {
          broke = true;
          break;
        }
      } else if (e.op === 'lookup' || e.op === 'objref-map') {
        cost.lookups++;
        const set = p.sets.get(e.set);
        if (!set) throw new Error(`nftvm: no set ${e.set}`);
        const klen = set.elements[0]?.key.length ?? 0;
        const key = read(e.reg, klen);
        const hit = set.elements.find((x) => eqBytes(x.key, key));
        if (e.op === 'objref-map') {
          if (!hit) {
            broke = true;
            break;
          }
          counted.push(`${e.set}[${hook === 'pre' ? frame.iif : frame.oif}]`);
        } else if (e.vmap) {
          if (!hit) {
            broke = true;
            break;
          }
          verdict = hit.data;
        } else if (!!hit === e.inv) {
          broke = true;
          break;
        }
      } else if (e.op === 'immediate') verdict = e.verdict;
    }
    steps.push({ chain, handle: rule.handle, exprs: n, matched: !broke, ...(broke || !verdict ? {} : { verdict }) });
    if (broke || !verdict || verdict === 'continue') continue;
    if (verdict === 'accept' || verdict === 'drop') return { verdict, steps, cost, counted };
    if (verdict === 'return') {
      const back = stack.pop();
      cost.returns++;
      if (!back) return { verdict: 'accept', steps, cost, counted };
      chain = back.chain;
      index = back.index;
      continue;
    }
    const m = /^(jump|goto) (\S+)$/.exec(verdict);
    if (!m) throw new Error(`nftvm: verdict ${verdict}`);
    if (m[1] === 'jump') {
      cost.jumps++;
      stack.push({ chain, index });
    } else cost.gotos++;
    chain = m[2] as string;
    index = 0;
  }
  throw new Error('nftvm: no verdict after 10 000 rules');
}

export function addCost(a: Cost, b: Cost): Cost {
  return {
    rules: a.rules + b.rules,
    exprs: a.exprs + b.exprs,
    loads: a.loads + b.loads,
    cmps: a.cmps + b.cmps,
    lookups: a.lookups + b.lookups,
    jumps: a.jumps + b.jumps,
    gotos: a.gotos + b.gotos,
    returns: a.returns + b.returns,
  };
}
