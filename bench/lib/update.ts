// Changing one VM's IP on a host with N protected interfaces.
//   nft generation: compile the whole host again (vm0 with its new address:
//     parse + resolve) and load it as a new generation (lowered under a fresh
//     load tag, one transaction replacing the tables);
//   nft set delta: the same change as a transaction of set-element updates
//     only (add the new `vnet0 . IP` elements, delete the old ones), computed
//     by diffing two generations lowered under the live tag (what `load`
//     sends when only set elements changed), sent through the netlink encoder
//     (host/nfnl), and the same delta through libnftables;
//   eBPF: updateConfig on vnet0's entry of its shape's object (write the
//     inactive nwf_cfg slot, flip its nwf_slot entry), the values computed
//     for that one interface.
// Each is timed without traffic, then repeated under a spoofed flood from vm0
// (source IP neither the old nor the new one) counting frames that reach the
// peer, and checked afterwards: frames from the new IP pass, from the old don't.
import { join } from 'node:path';
import { lowerToNft, NftPortLowering } from '../../src/backends/nft/lower.js';
import type { PortPart } from '../../src/backends/nft/parts.js';
import { toNftJson } from '../../src/backends/nft/serialize.js';
import { updateConfig } from '../../src/host/bpf-load.js';
import { applyNft } from '../../src/host/apply.js';
import { diffParts, elementBatch, setIndexOf, tagCommands, type SetDelta } from '../../src/host/load-plan.js';
import { withNetns } from '../../src/host/netns.js';
import { nftApply } from '../../src/host/nft.js';
import { applyElementDelta, NfnlSocket } from '../../src/host/nfnl/index.js';
import type { PolicyIR } from '../../src/ir/types.js';
import { loadEbpf, loadNft, startFlood, writeTrafgenConfigs, type BenchHost } from './host.js';
import { probeIps, type LeakResult } from './libvirt-phase.js';
import { ALT_IP, bindingTexts, bindingXml, compileNft, filters, parseBindings, portIp, resolveAll, vm0Config } from './policy.js';
import { resolveInterface } from '../../src/resolve/resolve.js';
import { parseFilterBindingXml } from '../../src/xml/parse-binding.js';
import { log, sleep, stat, type Stat } from './util.js';

/** A load of a resolved policy as `load` does it: lowered under the tag the load picks. */
const lowerUnderTag = (ir: PolicyIR) => (tag: string) => lowerToNft(ir, { tag }).batch;

export type UpdateMethod = 'nft-generation' | 'nft-set-delta' | 'nft-set-delta-libnftables' | 'ebpf-update-config';

export interface UpdateRow {
  method: UpdateMethod;
  n: number;
  changes: number;
  /** Work before the kernel sees anything (compile the generation / the interface's values). */
  compileMs: Stat;
  /** The kernel update itself: from the first byte sent to the change being live. */
  liveMs: Stat;
  leak: LeakResult;
  note?: string;
}

export interface UpdateOptions {
  n: number;
  /** Timed changes per method (eBPF gets `ebpfChanges`). */
  changes: number;
  ebpfChanges: number;
  /** Changes made during the spoofed flood. */
  leakChanges: number;
  workDir: string;
}

export async function updatePhase(host: BenchHost, o: UpdateOptions): Promise<UpdateRow[]> {
  const rows: UpdateRow[] = [];
  const cfg = writeTrafgenConfigs(host);
  const textsA = bindingTexts(o.n);
  const textsB = bindingTexts(o.n, (i) => (i === 0 ? ALT_IP : portIp(i)));
  const ipOf = (c: number): string => (c % 2 === 0 ? ALT_IP : portIp(0));

  const underFlood = async (change: (c: number) => void | Promise<void>, count: number): Promise<LeakResult> => {
    const fl = await startFlood(host, cfg.spoof, 60_000 + count * 5_000);
    let res: { sent: number; delivered: number; spoofArrived: number };
    try {
      await sleep(100);
      for (let c = 0; c < count; c++) {
        await change(c);
        await sleep(5);
      }
      await sleep(100);
    } finally {
      res = await fl.stop();
    }
    const last = ipOf(count - 1);
    return { changes: count, sent: res.sent, leaked: res.spoofArrived, otherArrived: res.delivered - res.spoofArrived, ...(await probeIps(host, last, last === ALT_IP ? portIp(0) : ALT_IP)) };
  };

  // ---- nft: generations ----
  {
    const irA = resolveAll(parseBindings(textsA));
    const irB = resolveAll(parseBindings(textsB));
    const base = loadNft(host, compileNft(textsA));
    const load = (ir: PolicyIR): Promise<string> => applyNft(lowerUnderTag(ir), { netns: host.hostNs, inProcess: true });
    try {
      const comp: number[] = [];
      const live: number[] = [];
      for (let c = 0; c < o.changes; c++) {
        const t0 = performance.now();
        const ir = resolveAll(parseBindings(c % 2 === 0 ? textsB : textsA));
        const t1 = performance.now();
        await load(ir);
        const t2 = performance.now();
        comp.push(t1 - t0);
        live.push(t2 - t1);
      }
      if (o.changes % 2 === 1) await load(irA);
      const leak = await underFlood(async (c) => {
        await load(c % 2 === 0 ? irB : irA);
      }, o.leakChanges);
      rows.push({ method: 'nft-generation', n: o.n, changes: o.changes, compileMs: stat(comp), liveMs: stat(live), leak });
      log(`update nft-generation n=${o.n}: compile ${stat(comp).median.toFixed(1)} ms, load ${stat(live).median.toFixed(1)} ms; leaked ${leak.leaked}/${leak.sent}`);
      const tag = await load(irA);

      // ---- nft: set-element delta ----
      // the incremental load nwf-fast takes when only addresses change, as its per-port path
      // (applyPortChanges -> commit) computes it ("compile"): the changed port's binding parsed,
      // resolved and lowered alone (the shapes are the loaded generation's, lowered once), and
      // the typed element diff of its part against the loaded one (host/load-plan.ts); then sent
      // as one transaction ("live"): through the netlink encoder (host/nfnl) on a socket kept
      // open, as a long-running updater would, and through libnftables for comparison
      const batchA = lowerToNft(irA, { tag }).batch;
      const index = setIndexOf([batchA]);
      const lowering = new NftPortLowering();
      const vm0Part = (ip: string): PortPart => lowering.port(resolveInterface(filters(), parseFilterBindingXml(bindingXml(0, ip), 'binding-0.xml')));
      const portDelta = (prev: PortPart, next: PortPart): SetDelta[] => {
        const d = diffParts([{ id: prev.iface, commands: tagCommands(prev.commands, tag) }], [{ id: next.iface, commands: tagCommands(next.commands, tag) }], index)?.deltas;
        if (!d) throw new Error("the port's two parts differ in more than set elements");
        return d;
      };
      const parts = [vm0Part(portIp(0)), vm0Part(ALT_IP)] as [PortPart, PortPart];
      const plans = [portDelta(parts[0], parts[1]), portDelta(parts[1], parts[0])];
      {
        // the same deltas as the diff of the two whole generations (untimed check)
        const batchB = lowerToNft(irB, { tag }).batch;
        const whole = diffParts([{ id: 'g', commands: batchA }], [{ id: 'g', commands: batchB }], setIndexOf([batchA, batchB]))?.deltas;
        if (JSON.stringify(whole) !== JSON.stringify(plans[0])) throw new Error("the port's delta differs from the diff of the whole generations");
      }
      let loadedPart = parts[0];
      const deltaOf = (c: number): { plan: SetDelta[]; next: PortPart } => {
        const next = vm0Part(ipOf(c));
        return { plan: portDelta(loadedPart, next), next };
      };
      const sock = withNetns(host.hostNs, () => NfnlSocket.open());
      try {
        const viaNfnl = async (plan: SetDelta[]): Promise<void> => {
          const r = await applyElementDelta(plan, { netns: host.hostNs, inProcess: true, socket: sock });
          if (r.path !== 'nfnl') throw new Error(`the netlink encoder was not used: ${r.fallback ?? ''}`);
        };
        const viaLib = async (plan: SetDelta[]): Promise<void> => {
          await nftApply(toNftJson(elementBatch(plan)), { netns: host.hostNs, inProcess: true });
        };
        for (const [method, apply, note] of [
          ['nft-set-delta', viaNfnl, "nwf-fast's incremental load: the changed port resolved and lowered alone and its element diff against the loaded part (compile), sent as one nf_tables netlink batch on the live sets (host/nfnl)"],
          ['nft-set-delta-libnftables', viaLib, 'the same delta through libnftables in-process (its client reads the whole table into its cache first)'],
        ] as const) {
          const comp: number[] = [];
          const live2: number[] = [];
          for (let c = 0; c < o.changes; c++) {
            const t0 = performance.now();
            const { plan, next } = deltaOf(c);
            const t1 = performance.now();
            await apply(plan);
            live2.push(performance.now() - t1);
            comp.push(t1 - t0);
            loadedPart = next;
          }
          if (o.changes % 2 === 1) await apply(plans[1] as SetDelta[]);
          const leak2 = await underFlood((c) => apply(plans[c % 2] as SetDelta[]), o.leakChanges);
          if (o.leakChanges % 2 === 1) await apply(plans[1] as SetDelta[]);
          loadedPart = parts[0];
          rows.push({ method, n: o.n, changes: o.changes, compileMs: stat(comp), liveMs: stat(live2), leak: leak2, note });
          log(`update ${method} n=${o.n}: delta ${stat(comp).median.toFixed(1)} ms, live ${stat(live2).median.toFixed(3)} ms; leaked ${leak2.leaked}/${leak2.sent}`);
        }
      } finally {
        sock.close();
      }
    } finally {
      await base.unload();
    }
  }

  // ---- eBPF: updateConfig in place ----
  {
    const ir = resolveAll(parseBindings(textsA));
    const l = await loadEbpf(host.hostNs, ir, { outDir: join(o.workDir, 'bpf-update'), cacheDir: join(o.workDir, 'bpf-cache') });
    try {
      const owner = l.prepared.shapes.find((p) => p.members.some((m) => m.iface === 'vnet0'));
      const tap = owner?.members.find((m) => m.iface === 'vnet0');
      if (!owner || !tap) throw new Error('vnet0 was not loaded');
      const vm0 = owner.shape;
      const comp: number[] = [];
      const live: number[] = [];
      const cfgs = [vm0Config(ALT_IP), vm0Config(portIp(0))];
      for (let c = 0; c < o.ebpfChanges; c++) {
        const t0 = performance.now();
        const build = vm0Config(ipOf(c));
        const t1 = performance.now();
        updateConfig(vm0, build, tap.index);
        const t2 = performance.now();
        comp.push(t1 - t0);
        live.push(t2 - t1);
      }
      if (o.ebpfChanges % 2 === 1) updateConfig(vm0, cfgs[1] as ReturnType<typeof vm0Config>, tap.index);
      const leak = await underFlood((c) => updateConfig(vm0, cfgs[c % 2] as ReturnType<typeof vm0Config>, tap.index), o.leakChanges);
      rows.push({ method: 'ebpf-update-config', n: o.n, changes: o.ebpfChanges, compileMs: stat(comp), liveMs: stat(live), leak });
      log(`update ebpf n=${o.n}: values ${stat(comp).median.toFixed(3)} ms, updateConfig ${(stat(live).median * 1000).toFixed(1)} us; leaked ${leak.leaked}/${leak.sent}`);
    } finally {
      await l.unload();
    }
  }
  return rows;
}
