// Conformance machinery: the same corpus frames through identical namespace
// hosts, one protected by real libvirt (a filter binding on vnet0), one by
// nwf-fast's nft backend, and optionally one by nwf-fast under --backend
// both (the nft second line and the eBPF programs on the tap) and one by the
// nft backend with its optimizer off, compared frame by frame with each other
// and with the reference evaluator.
import { execa } from 'execa';
import { evaluate, type EvalResult } from '../../../src/ir/eval.js';
import type { InterfacePolicy, L2Rule, L3Rule } from '../../../src/ir/types.js';
import type { CorpusFrame } from '../../../src/lab/frames/corpus.js';
import { canonicalFrame, deliver } from '../../../src/lab/packet-io.js';
import type { Testbed } from '../../../src/lab/testbed.js';

export interface Hosts {
  libvirt: Testbed;
  nft: Testbed;
  /** The host protected under --backend both. */
  both?: Testbed;
  /** The host protected by the nft backend with the optimizer off (compile --no-opt). */
  noOpt?: Testbed;
}

export interface Outcome {
  frame: CorpusFrame;
  /** Delivered on the libvirt host. */
  libvirt: boolean;
  /** Delivered on the nwf-fast host. */
  nft: boolean;
  /** Delivered on the --backend both host (when there is one). */
  both?: boolean;
  /** Delivered on the host whose nft ruleset was lowered without the optimizer (when there is one). */
  noOpt?: boolean;
  eval: EvalResult;
}

export interface SendResult {
  outcomes: Outcome[];
  /** Corpus frames that cannot go through a real bridge (runts, conntrack states other than a new connection). */
  skipped: number;
  ms: number;
}

const isIpFrame = (f: Uint8Array): boolean => f.length >= 14 && ((f[12] === 0x08 && f[13] === 0x00) || (f[12] === 0x86 && f[13] === 0xdd));

export async function flushConntrack(tb: Testbed): Promise<void> {
  await execa('ip', ['netns', 'exec', tb.hostNs, 'conntrack', '-F'], { reject: false, timeout: 10_000 });
}

/**
 * Sends every usable corpus frame (VM -> peer for 'out', peer -> VM for 'in')
 * through all the hosts at once. With `oneByOne`, IP frames are sent alone after
 * a conntrack flush on every host, so each is the first packet of a new
 * connection, as the evaluator assumes.
 */
export async function sendThroughBoth(hosts: Hosts, policy: InterfacePolicy, corpus: readonly CorpusFrame[], opts: { oneByOne?: boolean } = {}): Promise<SendResult> {
  const t0 = performance.now();
  let skipped = 0;
  const usable = corpus.filter((c) => {
    const ok = c.frame.length >= 14 && (!c.conn || (c.conn.state === 'new' && c.conn.direction === 'original'));
    if (!ok) skipped++;
    return ok;
  });
  type Delivered = Pick<Outcome, 'libvirt' | 'nft' | 'both' | 'noOpt'>;
  const delivered = new Map<CorpusFrame, Delivered>();
  const extra = (['both', 'noOpt'] as const).filter((k) => hosts[k] !== undefined);
  const all = [hosts.libvirt, hosts.nft, ...extra.map((k) => hosts[k] as Testbed)];
  const ends = (tb: Testbed, dir: 'out' | 'in') => {
    const vm = tb.guest('vm').endpoint;
    const peer = tb.guest('peer').endpoint;
    return dir === 'out' ? ([vm, peer] as const) : ([peer, vm] as const);
  };
  const sendBatch = async (frames: CorpusFrame[], dir: 'out' | 'in', quietMs: number, maxWaitMs: number): Promise<void> => {
    const bytes = frames.map((c) => c.frame);
    const [l, n, ...rest] = await Promise.all(
      all.map((tb) => {
        const [from, to] = ends(tb, dir);
        return deliver(from, to, bytes, { key: canonicalFrame, quietMs, maxWaitMs });
      }),
    );
    frames.forEach((c, i) => {
      const d: Delivered = { libvirt: l!.arrived[i] as boolean, nft: n!.arrived[i] as boolean };
      extra.forEach((k, j) => (d[k] = rest[j]!.arrived[i] as boolean));
      delivered.set(c, d);
    });
  };

  const single = opts.oneByOne ? usable.filter((c) => isIpFrame(c.frame)) : [];
  const bulk = usable.filter((c) => !single.includes(c));
  // Groups whose canonical forms are unique per direction (a tagged frame and its untagged twin look alike once received).
  const key = (c: CorpusFrame): string => `${c.direction}:${Buffer.from(canonicalFrame(c.frame)).toString('hex')}`;
  const groups: { keys: Set<string>; frames: CorpusFrame[] }[] = [];
  for (const c of bulk) {
    const k = key(c);
    let g = groups.find((x) => !x.keys.has(k));
    if (!g) groups.push((g = { keys: new Set(), frames: [] }));
    g.keys.add(k);
    g.frames.push(c);
  }
  for (const g of groups) {
    for (const dir of ['out', 'in'] as const) {
      const frames = g.frames.filter((c) => c.direction === dir);
      if (frames.length) await sendBatch(frames, dir, 60, 2000);
    }
  }
  for (const c of single) {
    await Promise.all(all.map(flushConntrack));
    await sendBatch([c], c.direction, 40, 1000);
  }
  const outcomes = usable.map((c): Outcome => {
    const d = delivered.get(c) as Delivered;
    return { frame: c, ...d, eval: evaluate(policy, c.direction, c.frame) };
  });
  return { outcomes, skipped, ms: performance.now() - t0 };
}

export const verdictWord = (delivered: boolean): 'accept' | 'drop' => (delivered ? 'accept' : 'drop');

/** Describes the rule that decided the evaluator's verdict, in libvirt's terms. */
export function decidingRule(policy: InterfacePolicy, o: Outcome): string {
  const d = o.eval.decidedBy;
  if (!d) {
    const last = o.eval.trace[o.eval.trace.length - 1];
    return last ? `${last.chain} ${last.event}${last.note ? ` (${last.note})` : ''}` : 'no rule (nothing hooked)';
  }
  const rules: (L2Rule | L3Rule)[] =
    d.stage === 'l2'
      ? [...policy.l2[o.frame.direction].chains.flatMap((c) => c.rules), ...policy.l2[o.frame.direction].root.flatMap((e) => (e.kind === 'rule' ? [e.rule] : []))]
      : [...policy.l3.fromVm, ...policy.l3.toVm, ...policy.l3.toHost];
  const r = rules.find((x) => x.id === d.ruleId);
  const chain = o.eval.trace.filter((t) => t.ruleId === d.ruleId).map((t) => t.chain)[0] ?? '?';
  return `${d.stage} ${chain}: ${d.ruleId} (filter ${d.filter} rule ${d.rule}${r ? `, ${r.origin.action} ${r.origin.direction}, priority ${r.priority}` : ''})`;
}

export function describeOutcome(policy: InterfacePolicy, o: Outcome): string {
  return [
    `${o.frame.direction} ${o.frame.name}`,
    `    libvirt ${verdictWord(o.libvirt)}, nwf-fast nft ${verdictWord(o.nft)}${o.both === undefined ? '' : `, nwf-fast both ${verdictWord(o.both)}`}${o.noOpt === undefined ? '' : `, nwf-fast nft --no-opt ${verdictWord(o.noOpt)}`}, evaluator ${o.eval.verdict} by ${decidingRule(policy, o)}`,
    `    frame ${Buffer.from(o.frame.frame).toString('hex')}`,
  ].join('\n');
}

// ---- frame facts, for exception predicates -------------------------------------------

/** The EtherType after any 802.1Q/802.1ad tags, and the offset of the network header. */
export function innerType(f: Uint8Array): { type: number; nh: number; tagged: boolean; vlanId?: number } {
  let off = 12;
  let tagged = false;
  let vlanId: number | undefined;
  for (let i = 0; i < 4 && off + 2 <= f.length; i++) {
    const t = ((f[off] ?? 0) << 8) | (f[off + 1] ?? 0);
    if (t !== 0x8100 && t !== 0x88a8) return { type: t, nh: off + 2, tagged, ...(vlanId !== undefined ? { vlanId } : {}) };
    tagged = true;
    vlanId ??= (((f[off + 2] ?? 0) << 8) | (f[off + 3] ?? 0)) & 0xfff;
    off += 4;
  }
  return { type: -1, nh: off + 2, tagged, ...(vlanId !== undefined ? { vlanId } : {}) };
}

/** ARP facts (untagged). */
export function arpFacts(f: Uint8Array): { op: number; spa: string; tpa: string } | undefined {
  if (f.length < 42 || f[12] !== 0x08 || f[13] !== 0x06) return undefined;
  const ip = (o: number): string => `${f[o]}.${f[o + 1]}.${f[o + 2]}.${f[o + 3]}`;
  return { op: ((f[20] ?? 0) << 8) | (f[21] ?? 0), spa: ip(28), tpa: ip(38) };
}

export function inIpv4Net(addr: string, net: string, prefix: number): boolean {
  const n = (a: string): number => a.split('.').reduce((x, y) => ((x << 8) | Number(y)) >>> 0, 0);
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  return ((n(addr) & mask) >>> 0) === ((n(net) & mask) >>> 0);
}

// ---- libvirt's ebtables layout vs the resolved policy -------------------------------------

/** The rules of each chain in `ebtables-save` output (nat table), as written. */
export function ebtablesChains(save: string): Map<string, string[]> {
  const chains = new Map<string, string[]>();
  for (const line of save.split('\n')) {
    const m = /^-A (\S+) (.*)$/.exec(line.trim());
    if (!m) continue;
    const list = chains.get(m[1] as string) ?? [];
    list.push(m[2] as string);
    chains.set(m[1] as string, list);
  }
  return chains;
}

const TARGET: Record<string, string> = { accept: 'ACCEPT', drop: 'DROP', reject: 'DROP', return: 'RETURN', continue: 'CONTINUE' };

/**
 * The L2 layout of one direction as a list of steps, libvirt's way
 * (`jump NAME` or a target per rule, sub-chains after the root chain), from
 * ebtables-save and from the resolved policy, so the two can be compared.
 */
export function layoutFromEbtables(save: string, iface: string, dir: 'out' | 'in'): string[] {
  const chains = ebtablesChains(save);
  const p = dir === 'out' ? 'I' : 'O';
  const prefix = `${p}-${iface}-`;
  const steps: string[] = [];
  const target = (r: string): string => /-j (\S+)$/.exec(r)?.[1] ?? '?';
  const sub = new Set<string>();
  for (const r of chains.get(`libvirt-${p}-${iface}`) ?? []) {
    const t = target(r);
    if (t.startsWith(prefix)) {
      steps.push(`jump ${t.slice(prefix.length)}`);
      sub.add(t);
    } else steps.push(t);
  }
  for (const c of [...sub]) steps.push(`[${c.slice(prefix.length)}] ${(chains.get(c) ?? []).map(target).join(' ')}`);
  return steps;
}

export function layoutFromPolicy(policy: InterfacePolicy, dir: 'out' | 'in'): string[] {
  const l2 = policy.l2[dir];
  const steps: string[] = [];
  const jumped: string[] = [];
  for (const e of l2.root) {
    if (e.kind === 'jump') {
      steps.push(`jump ${e.chain}`);
      jumped.push(e.chain);
    } else steps.push(TARGET[e.rule.verdict] ?? '?');
  }
  for (const name of jumped) steps.push(`[${name}] ${(l2.chains.find((c) => c.name === name)?.rules ?? []).map((r) => TARGET[r.verdict] ?? '?').join(' ')}`);
  return steps;
}
