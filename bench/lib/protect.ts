// Time to protect N interfaces with nwf-fast, from the binding XML texts to
// enforcement in the kernel:
//   nft:  parse + resolve + lower + JSON (compile), then one atomic
//         transaction, through libnftables in-process or the nft binary
//         (`ip netns exec HOST nft -j -f FILE`); or parse + resolve + lower
//         (compile), then the typed commands encoded as one nf_tables
//         netlink batch and sent (`nft-netlink`, as a full load sends them:
//         host/apply.ts applyFullTransaction);
//   eBPF: parse + resolve + compileBpf (the shape's object comes from the
//         cache: clang runs once per policy shape, measured separately as the
//         cold build), then per shape: load the object once (verifier),
//         fill its maps (batched), and attach every tap (clsact, ingress and
//         egress filters: batched rtnetlink requests, bpf/rtnl.ts).
// Every run starts from a host without nwf-fast state (removed untimed).
import { join } from 'node:path';
import { rmSync } from 'node:fs';
import { compileBpf } from '../../src/host/bpf-build.js';
import { nftApply } from '../../src/host/nft.js';
import { runLibnftables } from '../../src/host/nft.js';
import { setIndexOf } from '../../src/host/load-plan.js';
import { withNetns } from '../../src/host/netns.js';
import { nfnlChangesOf, NfnlSocket, prepareChangeBatch, sendPreparedBatch } from '../../src/host/nfnl/index.js';
import { lowerToNft } from '../../src/backends/nft/lower.js';
import { groupElements } from '../../src/backends/nft/parts.js';
import { loadEbpf, nftUnloadText, type BenchHost } from './host.js';
import { bindingTexts, compileNft, parseBindings, resolveAll } from './policy.js';
import { log, sleep, stat, type Stat } from './util.js';

export type ProtectMethod = 'nft-libnftables' | 'nft-binary' | 'nft-netlink' | 'ebpf';

export interface ProtectSample {
  method: ProtectMethod;
  n: number;
  round: number;
  compileMs: number;
  /** nft: the transaction; eBPF: load + attach. */
  loadMs: number;
  totalMs: number;
  detail?: Record<string, number>;
}

export interface ProtectRow {
  method: ProtectMethod;
  n: number;
  compileMs: Stat;
  loadMs: Stat;
  totalMs: Stat;
  detail?: Record<string, Stat>;
}

export interface ProtectResult {
  rows: ProtectRow[];
  samples: ProtectSample[];
  /** The first eBPF compile with an empty object cache (clang-19 runs once for the shape). */
  ebpfColdCompileMs: number;
  nftJsonBytes: Record<number, number>;
}

function summarize(samples: ProtectSample[]): ProtectRow[] {
  const keys = [...new Set(samples.map((s) => `${s.method}|${s.n}`))];
  return keys.map((k) => {
    const ss = samples.filter((s) => `${s.method}|${s.n}` === k);
    const first = ss[0] as ProtectSample;
    const detailKeys = Object.keys(first.detail ?? {});
    return {
      method: first.method,
      n: first.n,
      compileMs: stat(ss.map((s) => s.compileMs)),
      loadMs: stat(ss.map((s) => s.loadMs)),
      totalMs: stat(ss.map((s) => s.totalMs)),
      ...(detailKeys.length ? { detail: Object.fromEntries(detailKeys.map((d) => [d, stat(ss.map((s) => s.detail?.[d] ?? Number.NaN))])) } : {}),
    };
  });
}

export async function protectPhase(host: BenchHost, ns: readonly number[], rounds: number, workDir: string): Promise<ProtectResult> {
  const samples: ProtectSample[] = [];
  const nftJsonBytes: Record<number, number> = {};
  const cacheDir = join(workDir, 'bpf-cache');
  rmSync(cacheDir, { recursive: true, force: true });
  // Cold: clang builds the clean-traffic shape's object once.
  const tc = performance.now();
  const cold = await compileBpf(resolveAll(parseBindings(bindingTexts(1))), { outDir: join(workDir, 'bpf-cold'), cacheDir });
  const ebpfColdCompileMs = performance.now() - tc;
  log(`protect: eBPF cold compile (clang, ${cold.shapes.length} shape) ${ebpfColdCompileMs.toFixed(0)} ms`);

  const texts = new Map(ns.map((n) => [n, bindingTexts(n)]));
  const methods: ProtectMethod[] = ['nft-libnftables', 'nft-binary', 'nft-netlink', 'ebpf'];
  for (let r = 0; r < rounds; r++) {
    // Interleave: rotate the order of methods and sizes each round.
    const order = ns.flatMap((n) => methods.map((m) => ({ n, m })));
    const rot = (r * 5) % order.length;
    const cells = [...order.slice(rot), ...order.slice(0, rot)];
    for (const { n, m } of cells) {
      const t = texts.get(n) as string[];
      if (m === 'ebpf') {
        const t0 = performance.now();
        const ir = resolveAll(parseBindings(t));
        const t1 = performance.now();
        const l = await loadEbpf(host.hostNs, ir, { outDir: join(workDir, `bpf-out-${n}`), cacheDir });
        const total = performance.now() - t0;
        samples.push({
          method: m,
          n,
          round: r,
          compileMs: t1 - t0 + l.compileMs,
          loadMs: l.loadMs + l.attachMs,
          totalMs: total,
          detail: { resolveMs: t1 - t0, compileBpfMs: l.compileMs, loadMs: l.loadMs, attachMs: l.attachMs },
        });
        await l.unload();
      } else if (m === 'nft-netlink') {
        const sock = withNetns(host.hostNs, () => NfnlSocket.open());
        try {
          const t0 = performance.now();
          const cmds = groupElements(lowerToNft(resolveAll(parseBindings(t))).batch);
          const t1 = performance.now();
          const changes = nfnlChangesOf(cmds, setIndexOf([cmds]), undefined);
          if (!changes) throw new Error('nft-netlink: a command has no netlink form');
          const batch = prepareChangeBatch(sock, changes, { ackEach: false });
          const t2 = performance.now();
          sendPreparedBatch(sock, batch, 30_000);
          const t3 = performance.now();
          samples.push({ method: m, n, round: r, compileMs: t1 - t0, loadMs: t3 - t1, totalMs: t3 - t0, detail: { encodeMs: t2 - t1, kernelMs: t3 - t2, batchBytes: batch.bytes.length } });
        } finally {
          sock.close();
        }
        runLibnftables(nftUnloadText(), { netns: host.hostNs });
      } else {
        const t0 = performance.now();
        const json = compileNft(t);
        const t1 = performance.now();
        if (m === 'nft-libnftables') {
          const res = runLibnftables(json, { netns: host.hostNs });
          if (res.rc !== 0) throw new Error(`libnftables: ${res.error.slice(0, 1000)}`);
        } else {
          await nftApply(json, { netns: host.hostNs, timeoutMs: 120_000 });
        }
        const t2 = performance.now();
        nftJsonBytes[n] = json.length;
        samples.push({ method: m, n, round: r, compileMs: t1 - t0, loadMs: t2 - t1, totalMs: t2 - t0 });
        runLibnftables(nftUnloadText(), { netns: host.hostNs });
      }
      // Let the kernel finish freeing the previous state (RCU, deferred work) before the next timing.
      await sleep(50);
    }
    const done = summarize(samples.filter((s) => s.round === r));
    log(`protect round ${r + 1}/${rounds}: ${done.map((d) => `${d.method}@${d.n} ${d.totalMs.median.toFixed(0)}ms`).join(', ')}`);
  }
  return { rows: summarize(samples), samples, ebpfColdCompileMs, nftJsonBytes };
}
