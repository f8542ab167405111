// Lowering PolicyIR to the nft part of a generation (parts.ts): shapes
// lowered once each, and per port only what it adds. The table layout
// (bridge table `nwf_fast`, names from names.ts, untagged):
//
//   pre/post       base chains: dispatch by verdict maps, fail closed (skeleton.ts)
//   from_vm/to_vm  tap -> jump sh-<shape> | jump own-<dir>-<tap> | accept | goto drop-<dir>-unprotected
//                  | goto gatec-<dir> (a port with eBPF programs: --backend bpf, both)
//   gatec-<dir>, gate_from_vm/gate_to_vm, gate-on
//                  the eBPF gate: the tap instance the programs are on -> the port's verdict (skeleton.ts)
//   sh-<shape>[-<sub>], ss-<shape>-<k> (address sets), sm-<shape>-<k> + sp-<shape>-<k>-<tap>
//                  shared chains of a policy shape (shared.ts)
//   own-<dir>-<tap>[-<sub>]
//                  a port's own chains, where sharing is impossible (l2.ts)
//   drop-<dir>-<reason>, cnt-<dir>-<reason>
//                  drops counted per port and reason (skeleton.ts)
//   mk-in/out-<tap>, ip/ip6 tables with fi/fo/hi-<tap>
//                  L3 rules through br_netfilter (l3.ts)
// Dispatch is one verdict-map lookup keyed by interface name: O(1) in the
// number of VMs, and entries can be filled before a tap exists.
//
// A port whose policy cannot be lowered (a construct nft refuses) fails
// alone: it gets the fail-closed entries and a PortFailure; the others lower.
import { NwfError } from '../../util/errors.js';
import type { DropReason } from '../../ir/reasons.js';
import type { Direction, FailedInterface, InterfacePolicy, PolicyIR } from '../../ir/types.js';
import { DIRECTIONS } from '../../ir/types.js';
import { accept, add, goto, jump, str } from './build.js';
import type { NftBatch, NftCommand, Verdict } from './model.js';
import { FIXED, nftNames, shapeHash } from './names.js';
import { br, lowerOwnChains } from './l2.js';
import { hasL3, lowerL3Port, markCommands, MAX_L3_PORTS } from './l3.js';
import { buildTemplate, emitShape, layoutOf, shapePortCommands, templateFromLayout, type ShapeEmission, type Template, type TemplateLayout } from './shared.js';
import { PortClasses } from './port-memo.js';
import type { WalkEnd } from './opt/walk.js';
import { checkLearnedL3, learningPortCommands, portSeedOf, type PortSeed } from './learn.js';
import type { LearnedEntry } from '../../ir/learning.js';
import { DEFAULT_SKELETON_CONFIG, gateMap, lowerSkeleton, withSnoop, type SkeletonConfig } from './skeleton.js';
import { familiesOf, orderBatch, type NftParts, type PortPart, type ShapePart } from './parts.js';
import { tagCommands } from './tag.js';
import { secondLinePolicy } from './second-line.js';
import { appendAll } from '../../util/arrays.js';
import { CODES } from '../../util/errors.js';
import { firingPasses, notFired, OPT_VERSION, passesOf, type OptReport, type PassName } from './opt/passes.js';
import { FAST_KINDS, fastBasePortElements, fastBaseReport, type FastKind } from './opt/fast-base.js';
import type { FastAccepted } from './shared.js';

export { BRIDGE_PRE_PRIORITY } from './l3.js';
export { BRIDGE_POST_PRIORITY } from './skeleton.js';

export interface NftLowering {
  parts: NftParts;
  /** Ports that failed to lower here (on top of the IR's own failed interfaces, which are in `parts` too). */
  failed: FailedInterface[];
  /**
   * The whole generation as one batch, untagged, with the default skeleton
   * configuration and port ids numbered in interface order: what `compile`
   * prints and writes as nft.json (a host's load builds its own from the parts).
   */
  batch: NftBatch;
  /** Whether any port has L3 rules (ip/ip6 tables through br_netfilter). */
  l3: boolean;
  /** What the optimizer's passes did (compile --explain-opt). */
  opt: OptReport;
}

export interface LowerOptions {
  /** Share chains between interfaces of the same policy shape (default true; see shared.ts). */
  share?: boolean;
  /**
   * `rules` (default): the ports' L2 and L3 rules; `dispatch`: only their
   * dispatch entries (accept: the eBPF programs enforce L2, --backend bpf);
   * `second-line`: the rules, leaving out the L2 tests nft cannot express,
   * which the eBPF programs enforce (--backend both, second-line.ts).
   */
  mode?: 'rules' | 'dispatch' | 'second-line';
  /**
   * Who learns the addresses of learning ports: `nft` (default) the packet
   * path of this ruleset; `copy` (--backend both; the default of mode second-line) the eBPF programs, and
   * nwf-fast copies what they learned into the learned-state sets
   * (host/learn/kernel.ts copyBpfLearnedToNft): the ruleset never learns on
   * its own, it keeps the port in its learning table until the copy.
   */
  learner?: 'nft' | 'copy';
  /** The skeleton of `batch` (default: DEFAULT_SKELETON_CONFIG). */
  skeleton?: SkeletonConfig;
  /** A port that cannot be lowered throws (default); false: it fails closed and is listed in `failed` (a partial lowering). */
  strict?: boolean;
  /** Learned state to start learning ports from (ir/learning.ts; key learnKey(owner UUID, MAC)). */
  seeds?: ReadonlyMap<string, LearnedEntry>;
  /** `both`: ports with no eBPF program (enforced by nft alone): they learn in nft (see NftPortLowering.port). */
  noProgram?: ReadonlySet<string>;
  /** `batch` with every object under this load tag (tests and benchmarks that apply it whole; parts stay untagged). */
  tag?: string;
  /** Lower a port of a class seen before from its class (default true; false: every port by the full path, port-memo.ts). */
  memo?: boolean;
  /** Run the optimizer's passes on every shape (default true; opt/passes.ts). */
  optimize?: boolean;
  /** Only these passes (default: all). */
  passes?: readonly PassName[];
  /** Seconds a dhcp lease learned by the packet path lasts (config dhcp_kernel_lease; default learn.ts DEFAULT_DHCP_KERNEL_LEASE). */
  dhcpKernelLease?: number;
}

/** What NftPortLowering takes of LowerOptions. */
export type PortLoweringOptions = Pick<LowerOptions, 'share' | 'optimize' | 'passes' | 'dhcpKernelLease' | 'memo'>;

function dispatchEntry(dir: Direction, iface: string, v: Verdict): NftCommand {
  return add(br.element(dir === 'out' ? FIXED.fromVm : FIXED.toVm, [[str(iface), v]]));
}

/**
 * The dispatch of a port: its verdict, or, for a port whose eBPF programs
 * enforce (part of) its policy, the gate (skeleton.ts): the dispatch entry
 * goes to the gate chain, which lets only the tap instance the programs are
 * attached to on to `v` (the port's entry in the gate map) and drops any
 * other, counted as the port's unprotected drop.
 */
function dispatch(dir: Direction, iface: string, v: Verdict, gated: boolean): NftCommand[] {
  if (!gated) return [dispatchEntry(dir, iface, v)];
  return [dispatchEntry(dir, iface, goto(nftNames.gateChain(dir))), add(br.element(gateMap(dir), [[str(iface), v]])), ...countEntries(dir, iface, ['unprotected'])];
}

function countEntries(dir: Direction, iface: string, reasons: Iterable<DropReason | 'unprotected'>): NftCommand[] {
  return [...reasons].sort().map((r) => add(br.element(nftNames.countMap(dir, r), [str(iface)])));
}

/** Whether a port's dispatch goes through the eBPF gate (its part has entries behind it). */
export function isGated(part: Pick<PortPart, 'commands'>): boolean {
  return part.commands.some((c) => c.op === 'add' && c.object.kind === 'element' && (c.object.name === FIXED.gateFromVm || c.object.name === FIXED.gateToVm));
}

/** A failed port: dropped both ways, counted as unprotected. */
export function failedPortPart(iface: string): PortPart {
  const commands: NftCommand[] = [];
  for (const dir of DIRECTIONS) {
    commands.push(dispatchEntry(dir, iface, goto(nftNames.dropChain(dir, 'unprotected'))));
    appendAll(commands, countEntries(dir, iface, ['unprotected']));
  }
  return { iface, status: 'failed', commands, shapes: [] };
}

/** A port the eBPF programs protect (--backend bpf): nft only lets its frames through, from and to the tap the programs are on. */
export function acceptPortPart(iface: string, p?: InterfacePolicy): PortPart {
  const part: PortPart = { iface, status: 'protected', commands: DIRECTIONS.flatMap((dir) => dispatch(dir, iface, accept(), true)), shapes: [] };
  if (p?.learning) part.learn = learnInfo(p);
  return part;
}

/** A learning port's identity in its part (for reading its learned state back). */
function learnInfo(p: InterfacePolicy): NonNullable<PortPart['learn']> {
  return { mode: (p.learning as NonNullable<InterfacePolicy['learning']>).mode, owner: p.owner, mac: p.mac.toLowerCase(), ...(p.ownerUuid ? { uuid: p.ownerUuid } : {}) };
}

export function failureOf(p: Pick<InterfacePolicy, 'iface' | 'owner' | 'mac' | 'filter' | 'file'>, e: NwfError): FailedInterface {
  return { iface: p.iface, owner: p.owner, mac: p.mac, filter: p.filter, code: e.code, message: e.message, file: e.details.location?.file ?? p.file };
}

/** Lowers ports one at a time, each shape once (a cache by shape hash). */
export class NftPortLowering {
  private readonly shapes = new Map<string, { emission?: ShapeEmission; error?: NwfError; own?: true }>();
  private readonly passes: readonly PassName[];
  private readonly shapeUsers = new Map<string, string[]>();
  private readonly portNotes: OptReport['ports'] = [];
  /** The passes that change a shape and its hash, by template key (a function of the structure: decided once per shape). */
  private readonly firing = new Map<string, { passes: PassName[]; hash: string }>();
  /** Kinds of frames some port put in the base chain's fast sets (fast-base). */
  private readonly baseKinds = new Set<FastKind>();

  /**
   * secondLine: the L2 tests nft cannot express are left to the eBPF programs
   * (second-line.ts), and a port's dispatch goes through the gate of the tap
   * its programs are on (skeleton.ts), unless it has none (`noProgram`).
   */
  /** Classes of ports (port-memo.ts), and per class what its ports share. */
  private readonly classes: PortClasses | undefined;
  private readonly recipes = new Map<string, { emission: ShapeEmission; layout: TemplateLayout; key: string; ends: (WalkEnd[] | undefined)[] }>();

  constructor(private readonly opts: PortLoweringOptions & { secondLine?: boolean; learner?: 'nft' | 'copy' } = {}) {
    this.passes = passesOf(opts);
    this.classes = opts.memo === false ? undefined : new PortClasses();
  }

  /** What the optimizer did to the shapes lowered so far, and to the ports' elements. */
  optReport(ifaces?: ReadonlySet<string>): OptReport {
    const shapes: OptReport['shapes'] = [];
    for (const s of this.shapes.values()) {
      const e = s.emission;
      if (!e) continue;
      const users = (this.shapeUsers.get(e.hash) ?? []).filter((i) => !ifaces || ifaces.has(i));
      if (users.length) shapes.push({ shape: e.hash, dir: e.dir, ifaces: users, lines: e.opt });
    }
    return { passes: this.passes, shapes, ports: this.portNotes.filter((p) => !ifaces || ifaces.has(p.iface)) };
  }

  /** The kinds of frames whose base-chain fast sets the ports lowered so far fill (the skeleton's SkeletonConfig.fastBase). */
  fastBaseKinds(): FastKind[] {
    return FAST_KINDS.filter((k) => this.baseKinds.has(k));
  }

  /** The shapes lowered so far (every shape some port uses). */
  shapeParts(): ShapePart[] {
    const out: ShapePart[] = [];
    for (const s of this.shapes.values()) if (s.emission) out.push({ name: s.emission.hash, dir: s.emission.dir, commands: s.emission.commands });
    return out;
  }

  /** A shape by its hash, if some port lowered so far uses it. */
  shape(name: string): ShapePart | undefined {
    const e = this.shapes.get(name)?.emission;
    return e ? { name: e.hash, dir: e.dir, commands: e.commands } : undefined;
  }

  /**
   * The shape of a port's direction, its template and the walk ends of its
   * class: a port of a class seen before (port-memo.ts) takes them from the
   * class without building its key; the first port of a class, or a port
   * without one, the full path.
   */
  private sharedOf(p: InterfacePolicy, dir: Direction): { emission?: ShapeEmission; template: Template; ends?: (WalkEnd[] | undefined)[] } {
    const ck = this.classes?.classKey(p, dir);
    if (ck !== undefined) {
      const r = this.recipes.get(ck);
      if (r) return { emission: r.emission, template: templateFromLayout(p, dir, r.layout, r.key), ends: r.ends };
    }
    const s = this.shapeOf(p, dir);
    if (ck === undefined || !s.emission) return s;
    const recipe = { emission: s.emission, layout: layoutOf(s.template), key: s.template.key, ends: [] };
    this.recipes.set(ck, recipe);
    return { ...s, ends: recipe.ends };
  }

  private shapeOf(p: InterfacePolicy, dir: Direction): { emission?: ShapeEmission; template: ReturnType<typeof buildTemplate> } {
    const template = buildTemplate(p, dir);
    // the passes that change the shape are part of its key: an optimized shape never shares a name with an unoptimized one
    let keyed = this.firing.get(template.key);
    if (!keyed) {
      const passes = firingPasses(template, this.passes);
      keyed = { passes, hash: shapeHash(passes.length ? `${template.key}|opt${OPT_VERSION}:${passes.join(',')}` : template.key) };
      this.firing.set(template.key, keyed);
    }
    const { passes, hash } = keyed;
    let s = this.shapes.get(hash);
    if (!s) {
      try {
        const emission = emitShape(template, hash, passes);
        if (emission) appendAll(emission.opt, notFired(template, this.passes, passes));
        if (emission?.fast && this.passes.includes('fast-base')) for (const l of fastBaseReport(emission.dir, emission.fast.paths)) emission.opt.push(`fast-base ${l}`);
        s = emission ? { emission } : { own: true };
      } catch (e) {
        if (!(e instanceof NwfError)) throw e;
        s = { error: e };
      }
      this.shapes.set(hash, s);
    }
    if (s.error) throw s.error;
    return { ...(s.emission ? { emission: s.emission } : {}), template };
  }

  /**
   * One port's part (throws the NwfError of a rule nft cannot express).
   * `noProgram`: under `learner: 'copy'`, this port has no eBPF program (the
   * programs cannot hold its policy), so nothing would ever copy an address
   * for it: it learns in the nft packet path itself, as under --backend nft.
   */
  port(input: InterfacePolicy, seed?: PortSeed, noProgram = false): PortPart {
    const p = this.opts.secondLine ? secondLinePolicy(input).policy : input;
    const commands: NftCommand[] = [];
    const shapes: string[] = [];
    const policy = {} as Record<Direction, Verdict>;
    const reasons: Record<Direction, Set<DropReason>> = { out: new Set(), in: new Set() };
    const gated = this.opts.secondLine === true && !noProgram;
    for (const dir of DIRECTIONS) {
      if (p.l2[dir].root.length === 0) {
        // libvirt hooks no chain: everything is accepted
        policy[dir] = accept();
        if (!p.learning) appendAll(commands, dispatch(dir, p.iface, accept(), gated));
        continue;
      }
      // a dhcp port's $IP tests read its own lease set (learn.ts): it shares no shape
      const shared = this.opts.share === false || p.learning?.mode === 'dhcp' ? undefined : this.sharedOf(p, dir);
      if (shared?.emission) {
        const notes: string[] = [];
        const fast: FastAccepted[] = [];
        let own = shapePortCommands(shared.emission, shared.template, reasons[dir], notes, fast, shared.ends);
        // fast-base: only a port whose dispatch jumps straight to its shape (a learning port's goes through its
        // learning chain, an eBPF-enforced port's under both through the gate of its tap instance)
        if (dir === 'out' && fast.length && this.passes.includes('fast-base')) {
          if (p.learning) notes.push('fast-base: not in the base chain (a learning port goes through its learning chain first)');
          else if (gated) notes.push("fast-base: not in the base chain (its dispatch goes through the eBPF gate of its tap first)");
          else {
            const b = fastBasePortElements(p.iface, p.mac, fast);
            if (b.moved.length) own = own.filter((c) => !(c.object.kind === 'element' && b.moved.includes(c.object.name)));
            appendAll(own, b.commands);
            for (const k of b.kinds) this.baseKinds.add(k);
          }
        }
        appendAll(commands, own);
        policy[dir] = jump(shared.emission.root);
        shapes.push(shared.emission.hash);
        let users = this.shapeUsers.get(shared.emission.hash);
        if (!users) this.shapeUsers.set(shared.emission.hash, (users = []));
        users.push(p.iface);
        if (notes.length) this.portNotes.push({ iface: p.iface, dir, lines: notes });
      } else {
        const own = lowerOwnChains(p, dir, reasons[dir]);
        appendAll(commands, own.commands);
        policy[dir] = jump(own.root);
      }
      if (p.learning) continue;
      appendAll(commands, dispatch(dir, p.iface, policy[dir], gated));
      appendAll(commands, countEntries(dir, p.iface, reasons[dir]));
    }
    if (p.learning) {
      checkLearnedL3(p);
      // a learning port goes through its learning chains (learn.ts), which lead to its policy once locked
      appendAll(commands, learningPortCommands(p, policy, reasons, seed, this.opts.learner === 'copy' && !noProgram, this.opts.dhcpKernelLease));
      for (const dir of DIRECTIONS) {
        appendAll(commands, dispatch(dir, p.iface, jump(nftNames.learnChain(dir, p.iface)), gated));
        appendAll(commands, countEntries(dir, p.iface, reasons[dir]));
      }
    }
    const part: PortPart = { iface: p.iface, status: 'protected', commands, shapes };
    if (p.learning) part.learn = learnInfo(p);
    if (hasL3(p)) {
      const l3 = lowerL3Port(p);
      appendAll(commands, l3.commands);
      part.l3 = l3.families;
    }
    return part;
  }
}

/** Port ids in interface order (what a generation on disk shows; a host keeps its own, see host/loaded.ts). */
export function sequentialMarks(ports: readonly PortPart[]): Map<string, number> {
  const l3 = ports.filter((p) => p.l3?.length).map((p) => p.iface).sort();
  if (l3.length > MAX_L3_PORTS) throw new NwfError(CODES.POLICY_UNSUPPORTED, `at most ${MAX_L3_PORTS} interfaces with L3 rules are supported`);
  return new Map(l3.map((iface, i) => [iface, i + 1]));
}

/** The parts as one batch: skeleton, shapes, ports and their port-id parts, in creation order. */
export function partsBatch(parts: NftParts, skeleton: SkeletonConfig, marks: ReadonlyMap<string, number>): NftCommand[] {
  const cmds: NftCommand[] = lowerSkeleton(withSnoop(skeleton, parts.ports), familiesOf(parts.ports));
  for (const s of parts.shapes) appendAll(cmds, s.commands);
  for (const p of parts.ports) {
    appendAll(cmds, p.commands);
    const id = marks.get(p.iface);
    if (p.l3?.length && id !== undefined) appendAll(cmds, markCommands(p.iface, id, p.l3, p.learn ? (p.learn.mode === 'dhcp' ? 'dhcp' : true) : false));
  }
  return orderBatch(cmds);
}

export function lowerToNft(ir: PolicyIR, opts: LowerOptions = {}): NftLowering {
  const learner = opts.learner ?? (opts.mode === 'second-line' ? 'copy' : undefined);
  const lowering = new NftPortLowering({
    ...(opts.share === false ? { share: false } : {}),
    ...(opts.mode === 'second-line' ? { secondLine: true } : {}),
    ...(learner ? { learner } : {}),
    ...(opts.optimize === false ? { optimize: false } : {}),
    ...(opts.memo === false ? { memo: false } : {}),
    ...(opts.passes ? { passes: opts.passes } : {}),
    ...(opts.dhcpKernelLease !== undefined ? { dhcpKernelLease: opts.dhcpKernelLease } : {}),
  });
  const ports: PortPart[] = [];
  const failed: FailedInterface[] = [];
  for (const p of ir.interfaces) {
    if (opts.mode === 'dispatch') {
      ports.push(acceptPortPart(p.iface, p));
      continue;
    }
    try {
      ports.push(lowering.port(p, portSeedOf(p, opts.seeds), opts.noProgram?.has(p.iface) === true));
    } catch (e) {
      if (opts.strict !== false || !(e instanceof NwfError)) throw e;
      failed.push(failureOf(p, e));
      ports.push(failedPortPart(p.iface));
    }
  }
  for (const f of ir.failed ?? []) ports.push(failedPortPart(f.iface));
  ports.sort((a, b) => (a.iface < b.iface ? -1 : a.iface > b.iface ? 1 : 0));
  const used = new Set(ports.flatMap((p) => p.shapes));
  const parts: NftParts = { shapes: lowering.shapeParts().filter((s) => used.has(s.name)), ports };
  // the base chain's fast sets: the configuration's (default: all) while the pass runs, none without it; always those the ports fill
  const skeleton = opts.skeleton ?? DEFAULT_SKELETON_CONFIG;
  const passes = passesOf(opts);
  const configured = opts.mode !== 'dispatch' && passes.includes('fast-accept') && passes.includes('fast-base') ? (skeleton.fastBase ?? []) : [];
  const fastBase = FAST_KINDS.filter((k) => configured.includes(k) || lowering.fastBaseKinds().includes(k));
  const { fastBase: _configured, ...rest } = skeleton;
  const withFast: SkeletonConfig = { ...rest, ...(fastBase.length ? { fastBase } : {}) };
  // bpf and both: the skeleton has the gate the ports' dispatch goes through
  const whole = partsBatch(parts, opts.mode === 'dispatch' || opts.mode === 'second-line' ? { ...withFast, gate: true } : withFast, sequentialMarks(ports));
  const batch = opts.tag === undefined ? whole : tagCommands(whole, opts.tag);
  return { parts, failed, batch, l3: ports.some((p) => p.l3?.length), opt: lowering.optReport() };
}
