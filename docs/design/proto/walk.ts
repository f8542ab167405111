// Where a valid frame spends its time: each variant is loaded on the
// benchmark's host (N clean-traffic ports, default 1000), the kernel's
// bytecode is read back (`nft --debug=netlink list table`), and the four
// valid frames (IPv4 and ARP, from and to the VM) are walked through it
// (nftvm.ts): every rule entered, every expression, lookup, jump and return.
// The rules the walk finds matching are then checked against the kernel's own
// trace of the same frame sent once through the bridge (nft monitor trace).
//
//   npx tsx docs/design/proto/walk.ts [--ports N] [--variants a,b] [--no-trace]
//
// Root; everything in namespaces it creates and removes. Writes results/walk.md.
import { execa } from 'execa';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createBenchHost, type BenchHost } from '../../../bench/lib/host.js';
import { portMac, PEER_MAC } from '../../../bench/lib/policy.js';
import { inNs, onCleanup, sleep } from '../../../bench/lib/util.js';
import { PacketSocket } from '../../../src/lab/packet-io.js';
import { fromVm, frameOf, KIND_LABELS, KINDS, type Kind } from './frames.js';
import { benchPorts, bytecode, ifindexes, loadRuleset, mdTable, option, runScript, unloadRuleset, writeResult } from './lab.js';
import { addCost, parseProgram, walkHook, type Cost, type Program, type Step } from './nftvm.js';
import { familyOf, VARIANTS } from './variants.js';

// nftrace is set by the first hook the frame meets: the sending guard's veth end in the host (ingress, netdev) comes before the bridge
const TRACE_TABLE = (mac: string, dev: string): string => `table netdev nwf_trace {\n  chain t {\n    type filter hook ingress device "${dev}" priority -500; policy accept;\n    ether saddr ${mac} meta nftrace set 1\n  }\n}\n`;

interface KindWalk {
  kind: Kind;
  verdict: string;
  cost: Cost;
  lines: string[];
  matched: string[];
  trace?: string[];
}

function walkFrame(p: Program, texts: Map<number, string>, kind: Kind, ifindex: Map<string, number>, family: 'bridge' | 'netdev'): KindWalk {
  const out = fromVm(kind);
  const frame = { bytes: frameOf(kind), iif: out ? 'vnet0' : 'vpeer0', oif: out ? 'vpeer0' : 'vnet0', ifindex };
  const lines: string[] = [];
  const matched: string[] = [];
  let cost: Cost = { rules: 0, exprs: 0, loads: 0, cmps: 0, lookups: 0, jumps: 0, gotos: 0, returns: 0 };
  let verdict = 'accept';
  // bridge: both hooks of the bridge; netdev: the tap's ingress (from the VM) or egress (to it), chain 0 holding vnet0
  const hooks: [string, 'pre' | 'post'][] = family === 'bridge' ? [['pre', 'pre'], ['post', 'post']] : out ? [['in0', 'pre']] : [['out0', 'post']];
  for (const [base, hook] of hooks) {
    const r = walkHook(p, base, frame, hook);
    cost = addCost(cost, r.cost);
    const show = (s: Step): string => `${s.chain}: \`${texts.get(s.handle) ?? `handle ${s.handle}`}\` ${s.matched ? `**matches**${s.verdict ? ` -> ${s.verdict}` : ''}` : `fails at expression ${s.exprs}`}`;
    lines.push(`hook ${base} ${hook === 'pre' ? `(iif ${frame.iif})` : `(oif ${frame.oif})`}: ${r.verdict}, ${r.cost.rules} rules, ${r.cost.exprs} expressions, ${r.cost.lookups} lookups`);
    for (const s of r.steps) {
      lines.push(`  - ${show(s)} (${s.exprs} expr)`);
      if (s.matched) matched.push(`${s.chain}: ${texts.get(s.handle) ?? s.handle}`);
    }
    if (r.verdict === 'drop') {
      verdict = 'drop';
      break;
    }
  }
  return { kind, verdict, cost, lines, matched };
}

/** The kernel's trace of one frame: the rules of nwf_fast that matched, in order (chain: rule text). */
async function traceFrame(host: BenchHost, kind: Kind, family: 'bridge' | 'netdev'): Promise<string[]> {
  const out = fromVm(kind);
  const dir = mkdtempSync(join(tmpdir(), 'nwf-trace-'));
  const f = join(dir, 'trace.nft');
  writeFileSync(f, TRACE_TABLE(out ? portMac(0) : PEER_MAC, out ? 'vnet0' : 'vpeer0'));
  await inNs(host.hostNs, ['nft', '-f', f]);
  const mon = execa('ip', ['netns', 'exec', host.hostNs, 'nft', '-a', 'monitor', 'trace'], { reject: false, detached: true, timeout: 20_000, stdin: 'ignore' });
  const stop = onCleanup('nft monitor', async () => {
    try {
      if (mon.pid) process.kill(-mon.pid, 'SIGTERM');
    } catch {
      /* gone */
    }
    await Promise.race([mon, sleep(3000)]);
  });
  try {
    await sleep(700);
    const tx = PacketSocket.open(out ? host.vmNs : host.peerNs, 'eth0', { receive: false });
    try {
      tx.send(frameOf(kind));
    } finally {
      tx.close();
    }
    await sleep(700);
  } finally {
    await stop();
    await inNs(host.hostNs, ['nft', 'delete', 'table', 'netdev', 'nwf_trace'], { check: false });
    rmSync(dir, { recursive: true, force: true });
  }
  const r = await mon;
  const rules: string[] = [];
  for (const line of String(r.stdout ?? '').split('\n')) {
    const m = new RegExp(`^trace id \\S+ ${family} nwf_fast (\\S+) rule (.*) \\(verdict [^)]*\\)$`).exec(line.trim());
    if (m) rules.push(`${m[1]}: ${(m[2] as string).replace(/ # handle \d+$/, '')}`);
  }
  return rules;
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const n = Number(option(argv, 'ports') ?? 1000);
  const names = option(argv, 'variants')?.split(',');
  const trace = !argv.includes('--no-trace');
  const variants = VARIANTS.filter((v) => !names || names.includes(v.name));
  const { ports, ir } = benchPorts(n);
  const workDir = mkdtempSync(join(tmpdir(), 'nwf-walk-'));
  onCleanup('walk work dir', () => rmSync(workDir, { recursive: true, force: true }));
  console.log(`building the benchmark host with ${n} ports...`);
  const host = await createBenchHost(n, workDir);
  const undoHost = onCleanup('bench host', () => host.destroy());
  const ifindex = await ifindexes(host.hostNs);
  const summary: string[][] = [];
  const detail: string[] = [];
  let traceChecked = 0;
  const traceBad: string[] = [];
  try {
    for (const v of variants) {
      await unloadRuleset(host.hostNs);
      const rs = v.build({ ports, ir });
      const family = familyOf(rs);
      await loadRuleset(host.hostNs, rs);
      const { dump, text } = await bytecode(host.hostNs, family);
      const p = parseProgram(dump, family);
      const chains = p.chains.size;
      const rules = [...p.chains.values()].reduce((a, r) => a + r.length, 0);
      detail.push(`## ${v.name}: ${v.what}`, '', `${chains} chains, ${rules} rules in the kernel for ${n} ports.`, '');
      for (const kind of KINDS) {
        const w = walkFrame(p, text, kind, ifindex, family);
        if (trace) {
          w.trace = await traceFrame(host, kind, family);
          traceChecked++;
          const same = w.trace.length === w.matched.length && w.trace.every((x, i) => x === w.matched[i]);
          if (!same) traceBad.push(`${v.name} ${kind}: walk ${w.matched.join(', ')}; kernel trace ${w.trace.join(', ')}`);
        }
        const c = w.cost;
        summary.push([v.name, KIND_LABELS[kind], w.verdict, String(c.rules), String(c.exprs), String(c.loads), String(c.cmps), String(c.lookups), String(c.jumps), String(c.gotos), String(c.returns)]);
        detail.push(`### ${KIND_LABELS[kind]}: ${w.verdict}`, '', ...w.lines, '', ...(w.trace ? [`kernel trace (matching rules): ${w.trace.join(', ') || '(none)'}`, ''] : []));
      }
      console.log(`walked ${v.name}`);
    }
  } finally {
    await unloadRuleset(host.hostNs).catch(() => {});
    await undoHost();
  }
  const md = [
    `# Walks of the valid frames through each variant (${n} clean-traffic ports)`,
    '',
    `Generated by \`npx tsx docs/design/proto/walk.ts --ports ${n}\` on ${new Date().toISOString()}. Counts are of the kernel's bytecode`,
    "(nft --debug=netlink), both bridge hooks (prerouting for the frame's input port, postrouting for its output port).",
    'loads = payload and meta loads; lookups = set and map lookups (hash); jumps/gotos/returns as nft_do_chain takes them.',
    trace ? `The matching rules of every walk were checked against the kernel's trace (nft monitor trace) of the same frame: ${traceChecked - traceBad.length} of ${traceChecked} agree.` : 'Kernel trace check skipped (--no-trace).',
    '',
    mdTable(['variant', 'frame', 'verdict', 'rules', 'expressions', 'loads', 'compares', 'lookups', 'jumps', 'gotos', 'returns'], summary),
    '',
    ...(traceBad.length ? ['## Walk and kernel trace disagree', '', ...traceBad.map((x) => `- ${x}`), ''] : []),
    ...detail,
  ].join('\n');
  console.log(mdTable(['variant', 'frame', 'verdict', 'rules', 'expressions', 'loads', 'compares', 'lookups', 'jumps', 'gotos', 'returns'], summary));
  if (traceBad.length) console.log(traceBad.join('\n'));
  console.log(`wrote ${writeResult(`walk-${n}.md`, md)}`);
}

runScript('walk', main);
