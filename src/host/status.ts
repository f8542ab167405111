// `status`: what the state directory records, what the kernel holds, and one
// verdict on the two (health), never more optimistic than what was
// verified:
//   healthy             a generation is recorded, the kernel matches its snapshot, its programs are attached
//   not-loaded          nothing recorded as loaded and no nwf-fast table in the kernel
//   drift               the kernel differs from what was recorded
//   unprotected         VM ports on the managed bridges have no rules of nwf-fast or libvirt (the CLI adds live.ts's view)
//   unverified          drift cannot be checked (the snapshot or the stored generation is missing or damaged)
//   interrupted         a change was killed part-way (its journal outlived it)
//   failed-after-apply  a change failed after the kernel had changed
//   no-access           the kernel cannot be read (not root)
//   state-damaged       the state directory cannot be read
// The CLI's exit code follows the health (exitCodeOfHealth).
import type { Direction } from '../ir/types.js';
import { CODES, EXIT, NwfError } from '../util/errors.js';
import { listingNow, loadedStatus, tablesNow, type HostOptions, type LoadedStatus } from './apply.js';
import { type HostState, StateDir } from './generation.js';
import type { Listing } from './inventory.js';
import { describeJournal, readJournal } from './journal.js';
import { ifIndex, withNetns } from './netns.js';
import { KernelAccessError, type TableProbe } from './table-owner.js';
import type { OneLayerRule } from '../backends/layers.js';

export type Health = 'healthy' | 'not-loaded' | 'drift' | 'unprotected' | 'unverified' | 'interrupted' | 'failed-after-apply' | 'no-access' | 'state-damaged';

/** The worst first: a status reports the first of these that applies. */
const SEVERITY: readonly Health[] = ['state-damaged', 'no-access', 'failed-after-apply', 'interrupted', 'drift', 'unprotected', 'unverified', 'not-loaded', 'healthy'];

export function exitCodeOfHealth(h: Health): number {
  switch (h) {
    case 'healthy':
      return EXIT.ok;
    case 'not-loaded':
      return EXIT.notLoaded;
    case 'state-damaged':
    case 'no-access':
      return EXIT.runtime;
    default:
      return EXIT.drift;
  }
}

export interface InterfaceStatus {
  iface: string;
  /** The domain. */
  owner: string;
  filter: string;
  /** nft drop counters by reason. */
  drops: Record<string, number>;
  /** eBPF drop counters by reason (both directions). */
  bpfDrops?: Record<string, number>;
  /** eBPF drop counters by direction and reason. */
  bpfDropsByDirection?: Record<Direction, Record<string, number>>;
  /** eBPF generations: where nwf-fast's programs run on the tap (null: a direction without one), or 'no-tap'. */
  bpfHooks?: TapHooks;
  /** The tap exists in this namespace. */
  present?: boolean;
  /**
   * eBPF, a port behind the nft gate (backends/nft/skeleton.ts): `open` when
   * the gate lets the tap on, `closed` when the tap is not the instance its
   * programs were attached to (its frames are dropped, counted unprotected).
   */
  gate?: 'open' | 'closed';
  /** protected; failed: its policy failed to resolve or compile, its traffic is dropped (fail closed). */
  status?: 'protected' | 'failed';
  /** The error of a failed port. */
  error?: { code: string; message: string };
  /** --backend both: the rules only one layer enforces (eBPF: L2 tests nft cannot express; nft: L3/L4 rules). */
  oneLayer?: OneLayerRule[];
}

/** What runs on a tap, per direction (null: nothing of nwf-fast), or 'no-tap'. */
export type TapHooks = Record<'out' | 'in', 'tc' | 'tcx' | 'xdp' | null> | 'no-tap';

export interface Status {
  stateDir: string;
  health: Health;
  /** Why the health is not `healthy`, one sentence each (with what to do). */
  problems: string[];
  /** Worth knowing, not a problem (a load in progress, tables of others left alone). */
  notes: string[];
  current: string | null;
  history: string[];
  loadedAt?: string;
  backend?: 'nft' | 'bpf' | 'both';
  /** This state directory's owner id, the mark of its tables. */
  owner?: string;
  interfaces: InterfaceStatus[];
  /** True when the kernel's tables differ from what was recorded when the generation was loaded. */
  drift: boolean;
  driftDetail?: string;
  tablesPresent: { bridge: boolean; l3: boolean };
  /** The tables named like nwf-fast's, and whose they are. */
  tables: { family: string; name: string; state: string; owner?: string }[];
  /** Protected interfaces of the generation that exist here and that nothing of nwf-fast enforces now, and ports whose policy failed. */
  unprotected: string[];
  /** Identity and revision of what is loaded (changes with every load and port change), with its tap patterns and bridges. */
  loaded?: LoadedStatus['loaded'];
  /** Frames of ports without an entry (ports matching the tap patterns that nwf-fast does not know), dropped. */
  unknownPortDrops?: { fromVm: number; toVm: number };
}

function worst(a: Health, b: Health): Health {
  return SEVERITY.indexOf(a) <= SEVERITY.indexOf(b) ? a : b;
}

/** Adds a problem to a status; its health becomes the worse of the two. */
export function addProblem(s: Status, h: Health, text: string): void {
  s.health = worst(s.health, h);
  s.problems.push(text);
}

function inNs<T>(opts: HostOptions, fn: () => T): T {
  return opts.netns ? withNetns(opts.netns, fn) : fn();
}

function tapPresent(iface: string): boolean {
  try {
    ifIndex(iface);
    return true;
  } catch {
    return false;
  }
}

export async function status(opts: HostOptions): Promise<Status> {
  const state = new StateDir(opts.stateDir);
  const out: Status = { stateDir: opts.stateDir, health: 'healthy', problems: [], notes: [], current: null, history: [], interfaces: [], drift: false, tablesPresent: { bridge: false, l3: false }, tables: [], unprotected: [] };
  const problem = (h: Health, text: string): void => addProblem(out, h, text);

  // what the state directory records
  let s: HostState | undefined;
  try {
    s = state.read();
    out.current = s.current;
    out.history = s.history;
    if (s.loadedAt) out.loadedAt = s.loadedAt;
  } catch (e) {
    problem('state-damaged', e instanceof NwfError ? `${e.message}${e.details.hint ? ` (${e.details.hint})` : ''}` : String(e));
  }
  let owner: string | undefined;
  try {
    owner = state.ownerId();
    if (owner) out.owner = owner;
  } catch (e) {
    problem('state-damaged', e instanceof NwfError ? `${e.message}${e.details.hint ? ` (${e.details.hint})` : ''}` : String(e));
  }
  const journal = readJournal(state);
  const pending = describeJournal(journal);
  if (journal.kind === 'entry' && journal.running) out.notes.push(pending as string);
  else if (journal.kind === 'entry' && journal.entry.phase === 'failed-after-apply') problem('failed-after-apply', `${pending}; \`nwf-fast load\` of a generation (or \`nwf-fast rollback\`) repairs it`);
  else if (pending) problem('interrupted', `${pending}; \`nwf-fast load\` of a generation (or \`nwf-fast rollback\`) repairs it`);

  // what the kernel holds
  let tables: TableProbe[];
  let listing: Listing;
  try {
    tables = tablesNow(opts, owner);
    listing = await listingNow(opts, tables);
  } catch (e) {
    if (e instanceof KernelAccessError) {
      problem('no-access', `${e.message}: what the kernel enforces is unknown (${e.details.hint})`);
      return out;
    }
    throw e;
  }
  out.tables = tables.filter((t) => t.state !== 'absent').map((t) => ({ family: t.family, name: t.name, state: t.state, ...(t.owner ? { owner: t.owner } : {}) }));
  for (const t of tables) if (t.state === 'foreign' || t.state === 'other-owner') out.notes.push(`table ${t.family} ${t.name} is not this state directory's (${t.state === 'foreign' ? 'no nwf-fast mark' : `owner ${t.owner}`}): not looked at`);
  out.tablesPresent = { bridge: !!listing.bridge, l3: !!(listing.ip || listing.ip6 || listing.inet) };
  if (!s) return out;

  if (!s.current) {
    if (out.tablesPresent.bridge || out.tablesPresent.l3) {
      out.drift = true;
      out.driftDetail = 'nothing is recorded as loaded, but nwf-fast tables exist in the kernel';
      problem('drift', `${out.driftDetail}; \`nwf-fast load\` or \`nwf-fast unload\` makes them agree`);
    } else if (out.health === 'healthy') out.health = 'not-loaded';
    return out;
  }

  // what is recorded as loaded, verified against the kernel (apply.ts: nft tables, eBPF programs and maps)
  let ls: LoadedStatus;
  try {
    ls = await loadedStatus(opts, tables);
  } catch (e) {
    if (!(e instanceof NwfError) || e.code !== CODES.STATE_INVALID) throw e;
    problem('unverified', `drift cannot be checked: the record of what is loaded is damaged (${e.message}); \`nwf-fast load\` of the generation records it again`);
    return out;
  }
  if (!ls.loaded) {
    problem('unverified', `drift cannot be checked: the record of what is loaded (${opts.stateDir}/loaded) is missing (generation ${s.current} loaded by an older nwf-fast?); \`nwf-fast load\` of the generation records it`);
    return out;
  }
  out.backend = ls.backend as Status['backend'];
  out.loaded = ls.loaded;
  out.unknownPortDrops = ls.unprotected;
  const present = new Set(inNs(opts, () => ls.interfaces.map((p) => p.iface).filter(tapPresent)));
  out.interfaces = ls.interfaces.map((p) => ({
    iface: p.iface,
    owner: p.owner,
    filter: p.filter,
    drops: p.drops,
    ...(p.bpfDrops ? { bpfDrops: p.bpfDrops } : {}),
    ...(p.bpfHooks ? { bpfHooks: p.bpfHooks } : p.tapAbsent ? { bpfHooks: 'no-tap' as const } : {}),
    present: present.has(p.iface),
    ...(p.gate ? { gate: p.gate } : {}),
    status: p.status,
    ...(p.error ? { error: p.error } : {}),
    ...(p.oneLayer ? { oneLayer: p.oneLayer } : {}),
  }));
  // a tap that exists must carry nwf-fast's programs in both directions
  const bare: string[] = [];
  for (const i of out.interfaces) {
    const h = i.bpfHooks;
    if (!h || h === 'no-tap') continue;
    const dirs = (['out', 'in'] as const).filter((d) => h[d] === null).map((d) => (d === 'out' ? 'from the VM' : 'to the VM'));
    if (dirs.length) bare.push(`${i.iface} (${dirs.join(', ')})`);
  }
  const details = [...(bare.length ? [`eBPF programs missing on ${bare.join(', ')}`] : []), ...ls.driftDetails.filter((d) => !/^eBPF on .*: no nwf-fast program/.test(d))];
  if (details.length) {
    out.drift = true;
    out.driftDetail = details.join('; ');
    problem('drift', `drift: ${details.join('; ')}; \`nwf-fast load\` of the generation repairs it`);
  }
  // ports whose policy failed: dropped (fail closed), not protected
  for (const p of out.interfaces) if (p.status === 'failed') problem('unprotected', `${p.iface}: its policy failed (error ${p.error?.code ?? '?'}: ${p.error?.message ?? ''}): its traffic is dropped`);
  const nftMissing = ls.backend !== 'bpf' && !out.tablesPresent.bridge;
  const detached = new Set(out.interfaces.filter((i) => i.bpfHooks && i.bpfHooks !== 'no-tap' && (i.bpfHooks.out === null || i.bpfHooks.in === null)).map((i) => i.iface));
  for (const i of out.interfaces) {
    const only = (i.oneLayer ?? []).filter((r) => r.layer === 'ebpf').map((r) => r.rule);
    // (behind a closed gate the port's frames are dropped: reported as drift above)
    if (only.length && i.present && detached.has(i.iface) && i.gate !== 'closed') problem('drift', `${i.iface}: a direction has no eBPF program, so the rules only eBPF enforces (${only.join(', ')}) are not enforced there; \`nwf-fast load\` puts the programs back`);
  }
  out.unprotected = out.interfaces
    .filter((i) => i.present && (i.status === 'failed' || (ls.backend === 'bpf' ? detached.has(i.iface) && (i.gate !== 'closed' || !out.tablesPresent.bridge) : ls.backend === 'both' ? nftMissing && detached.has(i.iface) : nftMissing)))
    .map((i) => i.iface);
  if (journal.kind === 'entry' && !journal.running && out.health !== 'healthy') {
    out.notes.push(out.drift ? `the kernel does not match the recorded generation ${s.current}` : `the kernel still matches the recorded generation ${s.current}`);
  }
  return out;
}

/** A status that says what went wrong reading it, for outputs that must always say something (metrics). */
export function failedStatus(stateDir: string, e: unknown): Status {
  const msg = e instanceof NwfError ? e.message : (e as Error)?.message ?? String(e);
  const health: Health = e instanceof NwfError && e.code === CODES.KERNEL_UNSUPPORTED ? 'no-access' : 'state-damaged';
  return { stateDir, health, problems: [msg], notes: [], current: null, history: [], interfaces: [], drift: false, tablesPresent: { bridge: false, l3: false }, tables: [], unprotected: [] };
}
