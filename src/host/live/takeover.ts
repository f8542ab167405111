// Takeover: once nwf-fast's own rules for a tap are verified in force, remove
// libvirt's DISPATCH for that tap (and nothing else), so each frame is
// decided by nwf-fast alone; hand it back on request. What libvirt 9.0
// installs per filtered tap (verified with real libvirt, test/kernel):
//
//   ebtables nat   -A PREROUTING -i TAP -j libvirt-I-TAP
//                  -A POSTROUTING -o TAP -j libvirt-O-TAP
//   and, only when the filter has L3 rules, in iptables/ip6tables filter
//                  -A libvirt-in -m physdev --physdev-in TAP -g FI-TAP
//                  -A libvirt-out -m physdev --physdev-out TAP --physdev-is-bridged -g FO-TAP
//                  -A libvirt-host-in -m physdev --physdev-in TAP -g HI-TAP
//                  -A libvirt-in-post -m physdev --physdev-in TAP -j ACCEPT
//
// The first five are dispatch and are removed; libvirt's chains (libvirt-I-TAP,
// FI-TAP, ...) and the libvirt-in-post ACCEPT stay (that ACCEPT keeps the VM's
// forwarded traffic out of the rest of the host's FORWARD chain, as before).
// Each family's removals are one `*-restore --noflush` transaction, and what
// was removed (chain, rule, position) is recorded in <state_dir>/takeover.json
// so handback puts every rule back at its place (in reverse order of
// removal, so positions are exact when nothing else changed). Rules of
// libvirt's re-instantiation in progress (temporary chains libvirt-J-/P-,
// fi-/fo-/hi-) are never matched. libvirt puts its jumps back when it
// re-instantiates a binding; takeOver() is then simply run again.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CODES, NwfError } from '../../util/errors.js';
import { maxOf } from '../../util/arrays.js';
import type { CommandRunner } from '../runner.js';
import { hostRunner, inNetns } from '../netns.js';
import { StateDir, writeAtomic } from '../generation.js';
import { appendAudit } from '../audit.js';

export type XtFamily = 'eb' | 'ip' | 'ip6';

/** One libvirt dispatch rule, as iptables-save / ebtables-save print it. */
export interface DispatchRule {
  family: XtFamily;
  table: 'nat' | 'filter';
  chain: string;
  /** The rule after `-A CHAIN `. */
  spec: string;
  /** The chain it jumps to (libvirt's, e.g. libvirt-I-vnet0, FI-vnet0). */
  target: string;
  /** 1-based position in the chain when it was seen. */
  index: number;
}

const TOOLS: Record<XtFamily, { save: string; restore: string; table: 'nat' | 'filter' }> = {
  eb: { save: 'ebtables-save', restore: 'ebtables-restore', table: 'nat' },
  ip: { save: 'iptables-save', restore: 'iptables-restore', table: 'filter' },
  ip6: { save: 'ip6tables-save', restore: 'ip6tables-restore', table: 'filter' },
};
export const XT_FAMILIES: readonly XtFamily[] = ['eb', 'ip', 'ip6'];

/** A table of a save listing: its chains and each chain's rules (specs) in order. */
export interface SavedTable {
  chains: Set<string>;
  rules: Map<string, string[]>;
}

/** Parses iptables-save / ebtables-save output into tables. */
export function parseSave(text: string): Map<string, SavedTable> {
  const out = new Map<string, SavedTable>();
  let cur: SavedTable | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('*')) {
      cur = { chains: new Set(), rules: new Map() };
      out.set(line.slice(1), cur);
    } else if (cur && line.startsWith(':')) {
      cur.chains.add(line.slice(1).split(/\s+/)[0] as string);
    } else if (cur && line.startsWith('-A ')) {
      const rest = line.slice(3);
      const sp = rest.indexOf(' ');
      const chain = sp < 0 ? rest : rest.slice(0, sp);
      const list = cur.rules.get(chain) ?? [];
      list.push(sp < 0 ? '' : rest.slice(sp + 1).trim());
      cur.rules.set(chain, list);
    }
  }
  return out;
}

const sameTokens = (spec: string, want: readonly string[]): boolean => {
  const a = spec.split(/\s+/).filter(Boolean).sort();
  const b = [...want].sort();
  return a.length === b.length && a.every((t, i) => t === b[i]);
};

/** libvirt's dispatch shapes for a tap: chain, the exact tokens of the rule, its target. */
function dispatchShapes(family: XtFamily, tap: string): { chain: string; tokens: string[]; target: string }[] {
  if (family === 'eb') {
    return [
      { chain: 'PREROUTING', tokens: ['-i', tap, '-j', `libvirt-I-${tap}`], target: `libvirt-I-${tap}` },
      { chain: 'POSTROUTING', tokens: ['-o', tap, '-j', `libvirt-O-${tap}`], target: `libvirt-O-${tap}` },
    ];
  }
  return [
    { chain: 'libvirt-in', tokens: ['-m', 'physdev', '--physdev-in', tap, '-g', `FI-${tap}`], target: `FI-${tap}` },
    { chain: 'libvirt-out', tokens: ['-m', 'physdev', '--physdev-out', tap, '--physdev-is-bridged', '-g', `FO-${tap}`], target: `FO-${tap}` },
    { chain: 'libvirt-host-in', tokens: ['-m', 'physdev', '--physdev-in', tap, '-g', `HI-${tap}`], target: `HI-${tap}` },
  ];
}

/** libvirt's dispatch rules for `tap` in parsed listings (one per family). */
export function findDispatch(saves: ReadonlyMap<XtFamily, Map<string, SavedTable>>, tap: string): DispatchRule[] {
  const out: DispatchRule[] = [];
  for (const family of XT_FAMILIES) {
    const table = TOOLS[family].table;
    const t = saves.get(family)?.get(table);
    if (!t) continue;
    for (const s of dispatchShapes(family, tap)) {
      (t.rules.get(s.chain) ?? []).forEach((spec, i) => {
        if (sameTokens(spec, s.tokens)) out.push({ family, table, chain: s.chain, spec, target: s.target, index: i + 1 });
      });
    }
  }
  return out;
}

export interface XtOptions {
  netns?: string;
  runner?: CommandRunner;
}

/** The save listings of the three families (a family whose tool is missing or fails counts as empty). */
export async function readSaves(opts: XtOptions): Promise<Map<XtFamily, Map<string, SavedTable>>> {
  const runner = opts.runner ?? hostRunner();
  const out = new Map<XtFamily, Map<string, SavedTable>>();
  await Promise.all(
    XT_FAMILIES.map(async (f) => {
      const argv = inNetns(opts.netns, [TOOLS[f].save, ...(f === 'eb' ? ['-t', 'nat'] : ['-t', 'filter'])]);
      try {
        const r = await runner.run(argv, { check: false, timeoutMs: 30_000 });
        out.set(f, r.exitCode === 0 ? parseSave(r.stdout) : new Map());
      } catch {
        out.set(f, new Map());
      }
    }),
  );
  return out;
}

/** Runs one `*-restore --noflush` transaction of `lines` for a family (atomic: all or nothing). */
async function restoreTx(family: XtFamily, lines: readonly string[], opts: XtOptions): Promise<void> {
  if (!lines.length) return;
  const t = TOOLS[family];
  const input = [`*${t.table}`, ...lines, ...(family === 'eb' ? [] : ['COMMIT']), ''].join('\n');
  const argv = inNetns(opts.netns, [t.restore, '--noflush']);
  const r = await (opts.runner ?? hostRunner()).run(argv, { input, check: false, timeoutMs: 30_000 });
  if (r.exitCode !== 0) throw new NwfError(CODES.COMMAND_FAILED, `${t.restore} --noflush failed (exit ${r.exitCode}): ${r.stderr.trim()}\ninput:\n${input}`);
}

// ---- the record ----------------------------------------------------------------

export const TAKEOVER_FILE = 'takeover.json';
const FORMAT = 'nwf-fast-takeover/1';

/** A removed rule: `index` is its position in the listing of its transaction `tx` (numbered from 1 in this state directory). */
export interface RemovedRule extends DispatchRule {
  tx: number;
}

export interface TakeoverRecord {
  tap: string;
  /** When the rules were (last) removed. */
  at: string;
  removed: RemovedRule[];
}

interface TakeoverFile {
  format: typeof FORMAT;
  taps: TakeoverRecord[];
}

export function readTakeover(stateDir: string): TakeoverRecord[] {
  const file = join(stateDir, TAKEOVER_FILE);
  if (!existsSync(file)) return [];
  try {
    const doc = JSON.parse(readFileSync(file, 'utf8')) as Partial<TakeoverFile>;
    if (doc.format !== FORMAT || !Array.isArray(doc.taps)) throw new Error(`unknown format (expected ${FORMAT})`);
    return doc.taps;
  } catch (e) {
    throw new NwfError(CODES.STATE_INVALID, `${file} is unreadable: ${(e as Error).message}`, { location: { file }, cause: e, hint: "it lists libvirt's rules nwf-fast removed; without it, restarting libvirtd (or nwfilter re-instantiation) puts them back" });
  }
}

function writeTakeover(stateDir: string, taps: readonly TakeoverRecord[]): void {
  const doc: TakeoverFile = { format: FORMAT, taps: [...taps].sort((a, b) => (a.tap < b.tap ? -1 : a.tap > b.tap ? 1 : 0)) };
  writeAtomic(join(stateDir, TAKEOVER_FILE), JSON.stringify(doc, null, 1) + '\n');
}

const ruleKey = (r: Pick<DispatchRule, 'family' | 'chain' | 'spec'>): string => `${r.family}|${r.chain}|${r.spec}`;

export interface TakeoverResult {
  /** Taps whose libvirt dispatch was removed now. */
  taken: string[];
  /** Rules removed, per tap. */
  removed: Map<string, DispatchRule[]>;
}

/**
 * Removes libvirt's dispatch for each of `taps` that has any, and records it.
 * The caller holds the state lock and has verified that nwf-fast's rules for
 * these taps are in force (tapsInForce) just before.
 */
export async function takeOver(stateDir: string, taps: readonly string[], opts: XtOptions): Promise<TakeoverResult> {
  const t0 = performance.now();
  // one audit line per takeover that removed something, or failed (audit.ts)
  const audit = (outcome: 'ok' | 'failed', taken: readonly string[], e?: unknown): void => {
    let generation: string | null = null;
    try {
      generation = new StateDir(stateDir).read().current;
    } catch {
      // the audit line names no generation
    }
    appendAudit(stateDir, {
      op: 'takeover',
      outcome,
      generation,
      previous: generation,
      interfaces: { added: [...taken], removed: [], changed: [] },
      durationMs: Math.round((performance.now() - t0) * 10) / 10,
      ...(e instanceof NwfError ? { error: { code: e.code, message: e.message } } : e !== undefined ? { error: { code: 'internal', message: String((e as Error)?.message ?? e) } } : {}),
    });
  };
  try {
    const res = await takeOverTaps(stateDir, taps, opts);
    if (res.taken.length) audit('ok', res.taken);
    return res;
  } catch (e) {
    audit('failed', taps, e);
    throw e;
  }
}

async function takeOverTaps(stateDir: string, taps: readonly string[], opts: XtOptions): Promise<TakeoverResult> {
  const res: TakeoverResult = { taken: [], removed: new Map() };
  if (!taps.length) return res;
  // libvirt may change its rules between the listing and the transaction: one retry on a fresh listing.
  for (let attempt = 0; ; attempt++) {
    const saves = await readSaves(opts);
    const found = new Map(taps.map((t) => [t, findDispatch(saves, t)] as const).filter(([, r]) => r.length > 0));
    if (!found.size) return res;
    const all = [...found.values()].flat();
    try {
      for (const f of XT_FAMILIES) await restoreTx(f, all.filter((r) => r.family === f).map((r) => `-D ${r.chain} ${r.spec}`), opts);
    } catch (e) {
      if (attempt < 1) continue;
      throw e;
    }
    const records = readTakeover(stateDir);
    const at = new Date().toISOString();
    const tx = maxOf(records.flatMap((r) => r.removed.map((x) => x.tx)), 0) + 1;
    for (const [tap, found1] of found) {
      const rules = found1.map((r) => ({ ...r, tx }));
      const rec = records.find((r) => r.tap === tap);
      const keys = new Set(rules.map(ruleKey));
      if (rec) {
        rec.removed = [...rec.removed.filter((r) => !keys.has(ruleKey(r))), ...rules];
        rec.at = at;
      } else records.push({ tap, at, removed: rules });
      res.taken.push(tap);
      res.removed.set(tap, rules);
    }
    writeTakeover(stateDir, records);
    return res;
  }
}

export interface HandbackResult {
  /** Rules put back, per tap. */
  restored: Map<string, DispatchRule[]>;
  /** Rules not put back because libvirt's chain is gone (the port was torn down) or the rule is there already. */
  skipped: Map<string, DispatchRule[]>;
}

/**
 * Puts libvirt's dispatch back for `taps` ('all': every recorded tap) and
 * forgets their records. A rule is restored only if the chain it jumps to
 * still exists and it is not there already (libvirt re-added it), at its
 * recorded position (clamped to the chain's length), in reverse order of
 * removal.
 */
export async function handBack(stateDir: string, taps: readonly string[] | 'all', opts: XtOptions): Promise<HandbackResult> {
  const res: HandbackResult = { restored: new Map(), skipped: new Map() };
  const records = readTakeover(stateDir);
  const chosen = records.filter((r) => taps === 'all' || taps.includes(r.tap));
  if (!chosen.length) return res;
  const saves = await readSaves(opts);
  // Undo the newest transaction first; within one, insert by ascending position (positions are of its listing).
  const order = chosen.flatMap((rec) => rec.removed.map((rule) => ({ tap: rec.tap, rule }))).sort((a, b) => b.rule.tx - a.rule.tx || a.rule.index - b.rule.index);
  const lines = new Map<XtFamily, string[]>();
  const length = new Map<string, number>();
  for (const { tap, rule } of order) {
    const t = saves.get(rule.family)?.get(rule.table);
    const present = (t?.rules.get(rule.chain) ?? []).some((s) => s === rule.spec) || (lines.get(rule.family) ?? []).some((l) => l.endsWith(` ${rule.spec}`) && l.startsWith(`-I ${rule.chain} `));
    const usable = !!t && t.chains.has(rule.target) && t.chains.has(rule.chain) && !present;
    const into = usable ? res.restored : res.skipped;
    into.set(tap, [...(into.get(tap) ?? []), rule]);
    if (!usable) continue;
    const lk = `${rule.family}|${rule.chain}`;
    const len = length.get(lk) ?? (t.rules.get(rule.chain) ?? []).length;
    const pos = Math.min(rule.index, len + 1);
    length.set(lk, len + 1);
    lines.set(rule.family, [...(lines.get(rule.family) ?? []), `-I ${rule.chain} ${pos} ${rule.spec}`]);
  }
  for (const f of XT_FAMILIES) await restoreTx(f, lines.get(f) ?? [], opts);
  writeTakeover(
    stateDir,
    records.filter((r) => !chosen.includes(r)),
  );
  return res;
}

/** For each of `taps`, libvirt's dispatch rules present in the kernel now (taps still under libvirt's rules). */
export async function libvirtDispatchOf(taps: readonly string[], opts: XtOptions): Promise<Map<string, DispatchRule[]>> {
  const saves = await readSaves(opts);
  return new Map(taps.map((t) => [t, findDispatch(saves, t)] as const).filter(([, r]) => r.length > 0));
}
