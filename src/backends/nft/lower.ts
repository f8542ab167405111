// Lowering PolicyIR to one nftables transaction (libnftables JSON model):
// the table layout. What goes in it comes from l2.ts (an interface's own
// chains), shared.ts (chains shared by interfaces of one policy shape) and
// l3.ts (the L3/L4 rules through br_netfilter).
//
// Layout (bridge table `nwf_fast`):
//   chain pre  { type filter hook prerouting priority -300; iifname vmap @from_vm }
//   chain post { type filter hook postrouting priority 300; oifname vmap @to_vm }
//   i_<tap>, i_<tap>_<sub> or shared is<N>, is<N>_<sub>: traffic from the VM
//   o_<tap>, o_<tap>_<sub> or shared os<N>, ...: traffic to the VM
// Dispatch is one verdict-map lookup keyed by interface name: O(1) in the
// number of VMs, and names can be filled before a tap exists. Every name but
// base chains and counters carries the load tag given (names.ts).
import { CODES, InternalError, NwfError } from '../../util/errors.js';
import type { DropReason } from '../../ir/reasons.js';
import type { InterfacePolicy, PolicyIR } from '../../ir/types.js';
import { DIRECTIONS, L3_PATHS } from '../../ir/types.js';
import { add, jump, meta, str, vmap } from './build.js';
import type { NftBatch, NftCommand, Verdict } from './model.js';
import { BASE_CHAINS, dropCounter, nftNames } from './names.js';
import { br, lowerDirection } from './l2.js';
import { BRIDGE_PRE_PRIORITY, lowerL3, MAX_L3_PORTS } from './l3.js';
import { buildTemplate, counterMapCommands, emitShared, type Template } from './shared.js';
import { appendAll } from '../../util/arrays.js';

export { BRIDGE_PRE_PRIORITY };
export const BRIDGE_POST_PRIORITY = 300;

export interface NftLowering {
  batch: NftBatch;
  /** Whether the ip/ip6 tables (L3 rules) are part of this generation. */
  l3: boolean;
}

export interface LowerOptions {
  /** Share chains between interfaces of the same policy shape (default true; see shared.ts). */
  share?: boolean;
  /** The load tag every object name but base chains and counters carries (names.ts); none by default. */
  tag?: string;
}

type DispatchEntry = [ReturnType<typeof str>, Verdict];

function byIface(e: DispatchEntry[]): void {
  e.sort((a, b) => (a[0].value < b[0].value ? -1 : a[0].value > b[0].value ? 1 : 0));
}

export function lowerToNft(ir: PolicyIR, opts: LowerOptions = {}): NftLowering {
  const names = nftNames(opts.tag);
  // Build commands only: `load` puts them next to what the kernel holds (host/load-plan.ts),
  // without ever removing a base chain, so the hooks stay in place.
  const cmds: NftCommand[] = [];
  cmds.push(add(br.table));
  cmds.push(add(br.baseChain(BASE_CHAINS.bridgePre, { type: 'filter', hook: 'prerouting', prio: BRIDGE_PRE_PRIORITY, policy: 'accept' })));
  cmds.push(add(br.baseChain(BASE_CHAINS.bridgePost, { type: 'filter', hook: 'postrouting', prio: BRIDGE_POST_PRIORITY, policy: 'accept' })));

  const l3Ifaces = ir.interfaces.filter((p) => L3_PATHS.some((k) => p.l3[k].length > 0));
  if (l3Ifaces.length > MAX_L3_PORTS) throw new NwfError(CODES.POLICY_UNSUPPORTED, `at most ${MAX_L3_PORTS} interfaces with L3 rules are supported`);
  const markId = new Map(l3Ifaces.map((p, i) => [p.iface, i + 1]));

  const dispatch: Record<'out' | 'in', DispatchEntry[]> = { out: [], in: [] };
  const counters = new Set<string>();
  const perIface: NftCommand[] = [];
  const counterMaps: NftCommand[] = [];
  const share = opts.share ?? true;
  const policies = new Map(ir.interfaces.map((p) => [p.iface, p]));
  for (const dir of DIRECTIONS) {
    const elems = dispatch[dir];
    const own = (p: InterfacePolicy): void => {
      appendAll(perIface, lowerDirection(p, dir, names, counters));
      elems.push([str(p.iface), jump(names.l2Chain(dir, p.iface))]);
    };
    const shapes = new Map<string, Template[]>();
    for (const p of ir.interfaces) {
      if (p.l2[dir].root.length === 0) continue; // libvirt hooks no chain: all accepted
      if (!share) {
        own(p);
        continue;
      }
      const t = buildTemplate(p, dir);
      const list = shapes.get(t.key) ?? [];
      list.push(t);
      shapes.set(t.key, list);
    }
    const cmaps = new Map<string, Set<string>>();
    let shapeId = 0;
    for (const templates of shapes.values()) {
      const em = emitShared(dir, shapeId, templates, names);
      if (!em) {
        for (const t of templates) own(policies.get(t.iface) as InterfacePolicy);
        continue;
      }
      shapeId++;
      appendAll(perIface, em.commands);
      for (const c of em.namedCounters) counters.add(c);
      for (const t of templates) elems.push([str(t.iface), jump(em.root)]);
      for (const [reason, ifaces] of em.counterMaps) {
        const set = cmaps.get(reason) ?? new Set<string>();
        for (const i of ifaces) {
          set.add(i);
          counters.add(dropCounter(i, reason as DropReason));
        }
        cmaps.set(reason, set);
      }
    }
    appendAll(counterMaps, counterMapCommands(dir, cmaps, names));
  }
  byIface(dispatch.out);
  byIface(dispatch.in);

  // L3 preparation in the bridge table: marks carry the port ids to the ip/ip6 hooks.
  const l3 = lowerL3(l3Ifaces, markId, names);

  // Counters must exist before the rules that reference them (each table has its own).
  for (const c of [...counters].sort()) cmds.push(add(br.counter(c)));
  // Counter maps after the counters, chains before the maps and rules that jump to them.
  appendAll(appendAll(appendAll(cmds, counterMaps), perIface), l3.bridgeObjects);
  cmds.push(add(br.verdictMap(names.bridge.outMap, 'ifname', dispatch.out)), add(br.verdictMap(names.bridge.inMap, 'ifname', dispatch.in)));
  appendAll(appendAll(appendAll(cmds, l3.bridgeMaps), l3.bridgeRules), l3.preRule);
  cmds.push(add(br.rule(BASE_CHAINS.bridgePre, [vmap(meta('iifname'), names.bridge.outMap)], 'traffic from the VMs')));
  cmds.push(add(br.rule(BASE_CHAINS.bridgePost, [vmap(meta('oifname'), names.bridge.inMap)], 'traffic to the VMs')));
  appendAll(cmds, l3.tables);
  if (cmds.some((c) => c.op === 'add' && c.object.kind === 'rule' && c.object.statements.length === 0)) throw new InternalError('empty nft rule');
  return { batch: cmds, l3: l3Ifaces.length > 0 };
}
