// Adding and removing one domain's port on a host with N protected
// interfaces, through nwf-fast's per-port API (applyPortChanges), as the
// libvirt hook does when a VM starts and stops: the generation of N ports
// is loaded once, then the last port (vnet{N-1}, a real bridge port) is
// removed and added back, repeatedly. Rows:
//   nft      clean-traffic, a shape the host has: its set elements, dispatch
//            and counting entries, its small per-interface RARP chains;
//   nft-new  a port whose shape the host does not have (no-ip-spoofing):
//            the shape comes with it and goes with it;
//   ebpf     --backend bpf: the port's slot in its shape's pinned maps and
//            its tc filters, plus its nft dispatch entry.
// kernel = the nft transaction (nft) and the eBPF map updates and attach
// (ebpf), from the first byte sent to the change in force; the nft part is
// split where it goes over netlink: nftKernel = from the batch's first byte
// sent to the kernel's acknowledgement, nftUser = the rest (turning the
// typed commands into netlink changes, encoding); cleanup = the
// second nft transaction (what went); total = the whole call (reading the
// records, resolving and lowering the port, the kernel work, writing the
// records). A spoofed flood from vm0 runs during further changes: none of
// its frames may reach the peer.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { compileGeneration, type Backend } from '../../src/compile.js';
import { loadGeneration, unload } from '../../src/host/apply.js';
import { writeGeneration } from '../../src/host/generation.js';
import { applyPortChanges } from '../../src/host/port-changes.js';
import { loadSources } from '../../src/resolve/sources.js';
import { parseFilterBindingXml } from '../../src/xml/parse-binding.js';
import { startFlood, writeTrafgenConfigs, type BenchHost } from './host.js';
import { bindingTexts, bindingXml, filters, portIp, portName } from './policy.js';
import { log, sleep, stat, type Stat } from './util.js';

export type PortMethod = 'nft' | 'nft-new' | 'ebpf';

export interface PortRow {
  method: PortMethod;
  n: number;
  changes: number;
  add: { kernelMs: Stat; nftMs: Stat; nftKernelMs: Stat; nftUserMs: Stat; bpfMs: Stat; totalMs: Stat };
  remove: { kernelMs: Stat; nftMs: Stat; nftKernelMs: Stat; nftUserMs: Stat; bpfMs: Stat; cleanupMs: Stat; totalMs: Stat };
  /** How the nft part went: nwf-fast's netlink encoder or libnftables. */
  via: string;
  leak: { changes: number; sent: number; leaked: number };
  note: string;
}

export interface PortOptions {
  n: number;
  changes: number;
  leakChanges: number;
  workDir: string;
  cacheDir: string;
}

const NOTES: Record<PortMethod, string> = {
  nft: 'clean-traffic, a shape the host has: set elements, dispatch and counting entries, two per-interface RARP chains',
  'nft-new': 'a shape the host does not have (no-ip-spoofing): the shape comes and goes with the port',
  ebpf: '--backend bpf: a slot in the shape\'s pinned maps, tc filters, an nft dispatch entry',
};

export async function portsPhase(host: BenchHost, o: PortOptions): Promise<PortRow[]> {
  const rows: PortRow[] = [];
  const cfg = writeTrafgenConfigs(host);
  const last = o.n - 1;
  const tap = portName(last);
  const bindingOf = (filter: string) =>
    parseFilterBindingXml(bindingXml(last, portIp(last)).replace("filter='clean-traffic'", `filter='${filter}'`), `${tap}.xml`);
  for (const method of ['nft', 'nft-new', 'ebpf'] as const) {
    const backend: Backend = method === 'ebpf' ? 'bpf' : 'nft';
    const work = mkdtempSync(join(o.workDir, `ports-${method}-`));
    const bdir = join(work, 'bindings');
    mkdirSync(bdir);
    bindingTexts(o.n).forEach((t, i) => writeFileSync(join(bdir, `${portName(i)}.xml`), t));
    await writeGeneration(join(work, 'g'), compileGeneration(loadSources({ filterDirs: [], bundled: true, bindingPaths: [bdir], domainPaths: [], libvirt: false }), backend), { cacheDir: o.cacheDir });
    const opts = { stateDir: join(work, 'state'), netns: host.hostNs, inProcess: true, pinDir: `/sys/fs/bpf/nwfbench-${process.pid}-${method}`, filters: filters(), cacheDir: o.cacheDir };
    try {
      await loadGeneration(join(work, 'g'), opts);
      const add = parseFilterBindingXml(bindingXml(last, portIp(last)), `${tap}.xml`);
      const addBack = method === 'nft-new' ? bindingOf('no-ip-spoofing') : add;
      const s = {
        add: { kernel: [] as number[], nft: [] as number[], nftKernel: [] as number[], nftUser: [] as number[], bpf: [] as number[], total: [] as number[] },
        rm: { kernel: [] as number[], nft: [] as number[], nftKernel: [] as number[], nftUser: [] as number[], bpf: [] as number[], cleanup: [] as number[], total: [] as number[] },
      };
      /** The nft part's kernel and user-space shares (all of it counts as kernel when it went through libnftables: not separable). */
      const split = (ms: { nft: number; nftKernel?: number }, into: { nftKernel: number[]; nftUser: number[] }): void => {
        into.nftKernel.push(ms.nftKernel ?? ms.nft);
        into.nftUser.push(ms.nftKernel !== undefined ? ms.nft - ms.nftKernel : 0);
      };
      const via = new Set<string>();
      const once = async (timed: boolean): Promise<void> => {
        const r = await applyPortChanges({ remove: [tap] }, opts);
        await sleep(20);
        const a = await applyPortChanges({ add: [addBack] }, opts);
        await sleep(20);
        if (!timed) return;
        s.rm.nft.push(r.commit.ms.nft);
        split(r.commit.ms, s.rm);
        s.rm.bpf.push(r.commit.ms.bpf);
        s.rm.kernel.push(r.commit.ms.nft + r.commit.ms.bpf);
        s.rm.cleanup.push(r.commit.ms.cleanup);
        s.rm.total.push(r.commit.ms.total);
        s.add.nft.push(a.commit.ms.nft);
        split(a.commit.ms, s.add);
        s.add.bpf.push(a.commit.ms.bpf);
        s.add.kernel.push(a.commit.ms.nft + a.commit.ms.bpf);
        s.add.total.push(a.commit.ms.total);
        via.add(`add ${a.commit.path}/${a.commit.via ?? '-'}, remove ${r.commit.path}/${r.commit.via ?? '-'}`);
      };
      await once(false); // warm: the first change of a process loads its code paths
      for (let c = 0; c < o.changes; c++) await once(true);
      // leak check: vm0 floods spoofed frames while ports come and go
      const fl = await startFlood(host, cfg.spoof, 60_000 + o.leakChanges * 5_000);
      let res: { sent: number; delivered: number; spoofArrived: number };
      try {
        await sleep(100);
        for (let c = 0; c < o.leakChanges; c++) await once(false);
        await sleep(100);
      } finally {
        res = await fl.stop();
      }
      const row: PortRow = {
        method,
        n: o.n,
        changes: o.changes,
        add: { kernelMs: stat(s.add.kernel), nftMs: stat(s.add.nft), nftKernelMs: stat(s.add.nftKernel), nftUserMs: stat(s.add.nftUser), bpfMs: stat(s.add.bpf), totalMs: stat(s.add.total) },
        remove: { kernelMs: stat(s.rm.kernel), nftMs: stat(s.rm.nft), nftKernelMs: stat(s.rm.nftKernel), nftUserMs: stat(s.rm.nftUser), bpfMs: stat(s.rm.bpf), cleanupMs: stat(s.rm.cleanup), totalMs: stat(s.rm.total) },
        via: [...via].join('; '),
        leak: { changes: o.leakChanges, sent: res.sent, leaked: res.spoofArrived },
        note: NOTES[method],
      };
      rows.push(row);
      log(
        `ports ${method} n=${o.n}: add kernel ${row.add.kernelMs.median.toFixed(2)} ms (nft ${row.add.nftMs.median.toFixed(2)} = kernel ${row.add.nftKernelMs.median.toFixed(2)} + user ${row.add.nftUserMs.median.toFixed(2)}, eBPF ${row.add.bpfMs.median.toFixed(2)}), total ${row.add.totalMs.median.toFixed(1)} ms; ` +
          `remove kernel ${row.remove.kernelMs.median.toFixed(2)} ms (nft ${row.remove.nftMs.median.toFixed(2)} = kernel ${row.remove.nftKernelMs.median.toFixed(2)} + user ${row.remove.nftUserMs.median.toFixed(2)}, eBPF ${row.remove.bpfMs.median.toFixed(2)}), total ${row.remove.totalMs.median.toFixed(1)} ms; leaked ${row.leak.leaked}/${row.leak.sent}; ${row.via}`,
      );
    } finally {
      await unload(opts).catch(() => undefined);
      // unload empties the pin directory; the benchmark's own directory goes too
      rmSync(opts.pinDir, { recursive: true, force: true });
      rmSync(work, { recursive: true, force: true });
    }
  }
  return rows;
}

