// latest.md and latest.svg from the results (hand-written SVG, no dependencies),
// and the targets the README reports against.
import type { BenchResults } from '../run.js';
import { COMPILE_TASKS } from './compile-bench.js';
import { DP_LABELS, floorOf, PATH_LABELS, type DpCell, type DpConfig, type DpPath } from './dataplane.js';
import { LEARN_LABELS } from './learn.js';
import { libvirtProtectMs } from './libvirt-phase.js';
import type { ProtectMethod } from './protect.js';
import { fmt, stat, type Stat } from './util.js';

export interface Target {
  name: string;
  target: string;
  measured: string;
  met: boolean | null;
  libvirt: string;
}

const range = (s: Stat | undefined, unit = '', digits = 2): string =>
  !s || !s.n ? 'n/a' : s.n === 1 ? `${fmt(s.median, digits)}${unit}` : `${fmt(s.median, digits)}${unit} (${fmt(s.min, digits)}–${fmt(s.max, digits)})`;
const ms = (x: number): string => (x >= 10_000 ? `${fmt(x / 1000, 1)} s` : x >= 1000 ? `${fmt(x / 1000, 2)} s` : `${fmt(x, x < 1 ? 3 : 1)} ms`);
const msRange = (s: Stat | undefined): string => (!s || !s.n ? 'n/a' : s.n === 1 ? ms(s.median) : `${ms(s.median)} (${ms(s.min)}–${ms(s.max)})`);

function protectRow(r: BenchResults, m: ProtectMethod, n: number) {
  return r.protect?.rows.find((x) => x.method === m && x.n === n);
}
function cell(r: BenchResults, config: DpConfig, n: number, traffic: 'valid' | 'spoof', path: DpPath = 'veth'): DpCell | undefined {
  return r.dataplane?.cells.find((c) => (c.path ?? 'veth') === path && c.config === config && c.n === n && c.traffic === traffic);
}
function libvirtProtect(r: BenchResults, n: number): string {
  if (!r.libvirt?.available) return `not measured${r.libvirt?.reason ? ` (${r.libvirt.reason})` : ''}`;
  const p = libvirtProtectMs(r.libvirt, n);
  return p ? `${ms(p.ms)}${p.extrapolated ? ' (extrapolated)' : ''}` : 'n/a';
}

export function targets(r: BenchResults): Target[] {
  const out: Target[] = [];
  const nMax = Math.max(...r.config.ns);
  const lvChange = r.libvirt?.change;
  const lvText = (f: (lv: NonNullable<BenchResults['libvirt']>) => string): string => (r.libvirt?.available ? f(r.libvirt) : 'not measured');
  for (const m of ['nft-libnftables', 'nft-binary', 'nft-netlink', 'ebpf'] as const) {
    const row = protectRow(r, m, nMax);
    out.push({
      name: `protect ${nMax} interfaces, ${m}`,
      target: '< 0.3 s',
      measured: row ? msRange(row.totalMs) : 'n/a',
      met: row ? row.totalMs.median < 300 : null,
      libvirt: libvirtProtect(r, nMax),
    });
  }
  {
    // compile at fleet scale: the largest size of the compile phase, warm (tinybench) and once in a fresh process (peak RSS)
    const cn = r.compile?.length ? Math.max(...r.compile.map((c) => c.n)) : undefined;
    const warm = r.compile?.find((c) => c.n === cn && c.task === COMPILE_TASKS.total);
    const cold = r.compile?.find((c) => c.n === cn && c.task === COMPILE_TASKS.cold);
    out.push({
      name: `compile ${cn ?? 10_000} interfaces (nft: parse + resolve + lower + JSON)`,
      target: '< 1 s, peak RSS reported',
      measured: warm || cold ? [warm ? `${msRange(warm.ms)} warm` : '', cold ? `${ms(cold.ms.median)} in a fresh process, peak RSS ${fmt(cold.peakRssMB ?? NaN, 0)} MB` : ''].filter(Boolean).join('; ') : 'n/a',
      met: warm || cold ? [warm, cold].every((c) => !c || c.ms.median < 1000) : null,
      libvirt: 'n/a (libvirt instantiates per binding)',
    });
  }
  const lvValid = cell(r, 'libvirt-ebtables', nMax, 'valid');
  for (const [config, path, limit] of [
    ['ebpf-tc', 'veth', 1.05],
    ['ebpf-tc', 'tap', 1.05],
    ['ebpf-tcx', 'tap', 1.05],
    ['ebpf-xdp', 'tap', 1.05],
    ['nft', 'veth', 1.15],
  ] as const) {
    const c = cell(r, config, nMax, 'valid', path);
    const lv = path === 'veth' ? lvValid : cell(r, 'libvirt-ebtables', nMax, 'valid', path);
    out.push({
      name: `valid frame at ${nMax} ports, ${config === 'nft' ? 'nft' : `eBPF --bpf-hook ${config.slice(5)}${config === 'ebpf-tc' ? ' (the default)' : ''}`}, ${path}, CPU vs no filter`,
      target: `<= ${limit}x`,
      measured: c ? range(c.ratio, 'x') : 'n/a',
      met: c && c.ratio.n ? c.ratio.median <= limit : null,
      libvirt: lv ? range(lv.ratio, 'x') : 'not measured',
    });
  }
  for (const [config, path] of [
    ['ebpf-xdp', 'tap'],
    ['ebpf-tc', 'tap'],
    ['ebpf-tcx', 'tap'],
    ['ebpf-tc', 'veth'],
  ] as const) {
    const c = cell(r, config, nMax, 'spoof', path);
    const lv = cell(r, 'libvirt-ebtables', nMax, 'spoof', path);
    const floor = floorOf(config).replace('-drop', '');
    out.push({
      name: `spoofed frame dropped at ${nMax} ports, eBPF --bpf-hook ${config.slice(5)}, ${path}, CPU vs the ${floor} drop-all floor`,
      target: '<= 1.05x',
      measured: c?.ratioFloor ? range(c.ratioFloor, 'x') : 'n/a',
      met: c?.ratioFloor?.n ? c.ratioFloor.median <= 1.05 : null,
      libvirt: lv?.ratioTcFloor ? `${range(lv.ratioTcFloor, 'x')} (vs the tc floor)` : 'not measured',
    });
  }
  for (const [method, limit] of [
    ['nft-generation', 2],
    ['nft-set-delta', 2],
    ['ebpf-update-config', 2],
  ] as const) {
    const u = r.update?.find((x) => x.method === method);
    // the goal is the whole change (the work before the kernel update and the update itself)
    const whole = u ? (u.compileMs.n ? u.compileMs.median : 0) + u.liveMs.median : undefined;
    out.push({
      name: `IP change live on a ${nMax}-port host, ${method}`,
      target: `< ${limit} ms, no frame leaked`,
      measured: u && whole !== undefined ? `${ms(whole)} in all: kernel update ${msRange(u.liveMs)}${u.compileMs.n ? ` after ${ms(u.compileMs.median)} of work before it` : ''}; ${u.leak.leaked} of ${u.leak.sent} spoofed frames leaked` : 'n/a',
      met: u && whole !== undefined ? whole < limit && u.leak.leaked === 0 : null,
      libvirt: lvText(() => (lvChange ? `${ms(lvChange.totalMs.median)} (delete + create; unfiltered ≥ ${ms(lvChange.unfilteredMs.median)}); ${lvChange.leak.leaked} of ${lvChange.leak.sent} leaked` : 'n/a')),
    });
  }
  for (const [method, part, limit] of [
    ['nft', 'nft', 5],
    ['nft-new', 'nft', 5],
    ['ebpf', 'eBPF', 1],
  ] as const) {
    const p = r.ports?.find((x) => x.method === method);
    // the kernel part the goal is about: nft's netlink batch (first byte sent to acknowledgement), eBPF's map updates and attach
    const add = p ? (part === 'nft' ? p.add.nftKernelMs : p.add.bpfMs) : undefined;
    const rm = p ? (part === 'nft' ? p.remove.nftKernelMs : p.remove.bpfMs) : undefined;
    out.push({
      name: `per-domain add/remove at ${nMax} ports, ${method}, ${part} ms (kernel part)`,
      target: `< ${limit} ms, no frame leaked`,
      measured: p && add && rm ? `add ${msRange(add)}, remove ${msRange(rm)}; whole call ${ms(p.add.totalMs.median)} / ${ms(p.remove.totalMs.median)}; ${p.leak.leaked} of ${p.leak.sent} spoofed leaked` : 'n/a',
      met: p && add && rm ? add.median < limit && rm.median < limit && p.leak.leaked === 0 : null,
      libvirt: lvText(() => (lvChange ? `binding create ${ms(lvChange.createMs.median)}, delete ${ms(lvChange.deleteMs.median)}` : 'n/a')),
    });
  }
  {
    // the learning path: spoofed frames after the teaching frame (goal 0), libvirt's window side by side
    const lr = r.learn;
    const lv = lr?.rows.find((x) => x.method === 'libvirt');
    const lvText = lv
      ? `${range(lv.spoofDelivered, '', 0)} of ${range(lv.spoofSent, '', 0)} delivered; the last one sent ${msRange(lv.lastLeakMs)} after the teaching frame`
      : `not measured${lr?.libvirt.reason ? ` (${lr.libvirt.reason})` : ''}`;
    for (const m of ['nft', 'ebpf'] as const) {
      const row = lr?.rows.find((x) => x.method === m);
      out.push({
        name: `IP learning (CTRL_IP_LEARNING=any), ${LEARN_LABELS[m]}: spoofed frames delivered after the teaching frame`,
        target: '0, legitimate frames pass',
        measured: row?.spoofDelivered.n
          ? `${fmt(row.spoofDelivered.max, 0)} of ${range(row.spoofSent, '', 0)} (worst of ${row.rounds.length} rounds); legitimate ${row.legitDelivered} of ${row.legitSent}; address readable ${msRange(row.readableMs)} after the teaching frame`
          : 'n/a',
        met: row?.spoofDelivered.n ? row.spoofDelivered.max === 0 && row.legitDelivered === row.legitSent && row.learnedRight === row.rounds.length : null,
        libvirt: lvText,
      });
    }
  }
  return out;
}

const yes = (b: boolean | null): string => (b === null ? 'n/a' : b ? 'yes' : '**no**');

export function renderMarkdown(r: BenchResults): string {
  const L: string[] = [];
  const nMax = Math.max(...r.config.ns);
  const e = r.env;
  L.push(`# nwf-fast benchmark: ${r.mode} run`, '');
  L.push(`${r.startedAt}, ${r.durationS} s. Generated by \`bench/run.ts\`; see \`bench/README.md\` for what each number means.`, '');
  L.push('| machine | |', '| --- | --- |');
  L.push(`| CPU | ${e.cpuModel}, ${e.cpus} CPUs, ${e.memGiB} GiB |`);
  L.push(`| kernel / OS | ${e.kernel} / ${e.os} |`);
  L.push(`| load average at start | ${e.loadavg.join(' ')} |`);
  for (const [k, v] of Object.entries(e.tools)) L.push(`| ${k} | ${v.replace(/\|/g, '/')} |`);
  L.push(`| br_netfilter (bridge-nf-call-iptables) | ${r.brNetfilterDefault ? 'on (the default)' : 'off'} |`, '');

  if (r.errors.length) {
    L.push('## Failed phases', '');
    for (const x of r.errors) L.push(`- **${x.phase}**: ${x.message.split('\n')[0]}`);
    L.push('');
  }
  if (r.notes.length) {
    L.push('## Notes', '');
    for (const n of r.notes) L.push(`- ${n}`);
    L.push('');
  }

  L.push('## Targets', '', '| target | goal | measured (median, min–max) | met | libvirt |', '| --- | --- | --- | --- | --- |');
  for (const t of r.targets ?? []) L.push(`| ${t.name} | ${t.target} | ${t.measured} | ${yes(t.met)} | ${t.libvirt} |`);
  L.push('');

  // ---- protect ----
  L.push('## Time to protect N interfaces (clean-traffic)', '');
  {
    const lv = r.libvirt;
    const lvText = lv?.available
      ? ` libvirt: \`virsh nwfilter-binding-create\` one port after another on a real libvirtd, measured up to N = ${lv.bindings.length}; beyond that **extrapolated** (labelled) from a linear fit of the per-binding time against the ports already present, ms = ${fmt(lv.fit?.a ?? Number.NaN, 0)} + ${fmt(lv.fit?.b ?? Number.NaN, 2)} × ports, fitted on those bindings and on real bindings timed with ~${r.config.libvirtFillTo.join(' and ~')} ports' rules present (libvirt's own rules replicated with ebtables-restore).`
      : '';
    L.push(`From the binding XML texts to enforcement in the kernel; median (min–max) of ${r.config.protectRounds} rounds.${lvText}`, '');
  }
  L.push(`| method | ${r.config.ns.map((n) => `N = ${n}`).join(' | ')} |`, `| --- | ${r.config.ns.map(() => '---').join(' | ')} |`);
  L.push(`| libvirt (filter binding API) | ${r.config.ns.map((n) => libvirtProtect(r, n)).join(' | ')} |`);
  const pLabels: Record<ProtectMethod, string> = { 'nft-libnftables': 'nwf-fast nft, libnftables in-process', 'nft-binary': 'nwf-fast nft, nft binary', 'nft-netlink': 'nwf-fast nft, one netlink batch (as a full load sends it)', ebpf: 'nwf-fast eBPF (compile + load + attach)' };
  for (const m of ['nft-libnftables', 'nft-binary', 'nft-netlink', 'ebpf'] as const) {
    L.push(`| ${pLabels[m]} | ${r.config.ns.map((n) => msRange(protectRow(r, m, n)?.totalMs)).join(' | ')} |`);
  }
  L.push('');
  if (r.protect) {
    L.push('Split (medians): compile = parse + resolve + lower (+ JSON for nft through libnftables or the binary, + compileBpf from the warm object cache for eBPF); load = the nft transaction (netlink: encoding the batch and the commit in the kernel), or eBPF object loads (verifier) + tc attach.', '');
    L.push(`| method | ${r.config.ns.map((n) => `N = ${n} compile / load`).join(' | ')} |`, `| --- | ${r.config.ns.map(() => '---').join(' | ')} |`);
    for (const m of ['nft-libnftables', 'nft-binary', 'nft-netlink', 'ebpf'] as const) {
      L.push(`| ${pLabels[m]} | ${r.config.ns.map((n) => { const row = protectRow(r, m, n); return row ? `${ms(row.compileMs.median)} / ${ms(row.loadMs.median)}` : 'n/a'; }).join(' | ')} |`);
    }
    L.push('');
    L.push(`eBPF: the first compile of the clean-traffic shape (clang-19, empty cache) took ${ms(r.protect.ebpfColdCompileMs)}; it happens once per policy shape and is not in the table. nft JSON size: ${Object.entries(r.protect.nftJsonBytes).map(([n, b]) => `${n}: ${fmt(b / 1024, 1)} KiB`).join(', ')}.`, '');
  }
  if (r.libvirt?.available) {
    const lv = r.libvirt;
    const atFill = r.config.libvirtFillTo
      .map((m) => {
        const xs = lv.samples.filter((b) => b.index >= m && b.index < m + r.config.libvirtSamplesPerFill).map((b) => b.ms);
        return xs.length ? `with ~${m} ports present ${msRange(statOf(xs))}` : '';
      })
      .filter(Boolean)
      .join(', ');
    L.push(
      `libvirt ${lv.version ?? ''}: per binding ${msRange(statOf(lv.bindings.map((b) => b.ms)))} for the first ${lv.bindings.length} ports${atFill ? `; ${atFill}` : ''}. Processes started per binding ≈ ${range(lv.forksPerBinding, '', 0)} (machine-wide fork counter during the call, minus the virsh the benchmark started; other activity on the machine adds to it). Daemon start ${ms(lv.startMs ?? Number.NaN)} (not counted).`,
      '',
    );
  } else if (r.libvirt) {
    L.push(`libvirt: not measured: ${r.libvirt.reason}.`, '');
  }

  // ---- update ----
  L.push(`## Changing one VM's IP on a host with ${nMax} protected interfaces`, '');
  L.push('live = the kernel update (from the first byte sent to the change being in force); compile = work before it. Leak check: a spoofed flood from the VM (source IP neither old nor new) runs while the IP is changed back and forth; afterwards frames from the new IP must pass and from the old IP must not.', '');
  L.push('| method | changes timed | compile | live | spoofed frames leaked during changes | after: new IP passes / old IP passes |', '| --- | --- | --- | --- | --- | --- |');
  if (r.libvirt?.available && r.libvirt.change) {
    const c = r.libvirt.change;
    L.push(`| libvirt: binding delete + create (${r.libvirt.changePorts ?? r.libvirt.bindings.length} ports present) | ${c.changes} | – | ${msRange(c.totalMs)} (delete ${ms(c.deleteMs.median)} + create ${ms(c.createMs.median)}; port unfiltered ≥ ${ms(c.unfilteredMs.median)}; ≈ ${fmt(c.forks.median, 0)} processes) | ${c.leak.leaked} of ${c.leak.sent} (${c.leak.changes} changes) | ${c.leak.newIpDelivered ?? 'n/a'} / ${c.leak.oldIpDelivered ?? 'n/a'} of ${c.leak.probe ?? 'n/a'} |`);
  }
  for (const u of r.update ?? []) {
    L.push(`| ${u.method}${u.note ? ` (${u.note})` : ''} | ${u.changes} | ${u.compileMs.n ? msRange(u.compileMs) : '–'} | ${msRange(u.liveMs)} | ${u.leak.leaked} of ${u.leak.sent} (${u.leak.changes} changes) | ${u.leak.newIpDelivered ?? 'n/a'} / ${u.leak.oldIpDelivered ?? 'n/a'} of ${u.leak.probe ?? 'n/a'} |`);
  }
  L.push('');

  // ---- ports ----
  if (r.ports?.length) {
    L.push(`## Adding and removing one domain's port on a host with ${nMax} protected interfaces`, '');
    L.push("As the libvirt hook does at a VM's start and stop (applyPortChanges). nft = the nft transaction, split into kernel (netlink: from the batch's first byte sent to the kernel's acknowledgement; through libnftables all of it) and user space (building and encoding the batch); eBPF = map updates, tc attach/detach, checks; whole call = reading the records, resolving and lowering the port, the kernel work, writing the records. A spoofed flood runs during further changes.", '');
    L.push('| method | changes timed | add: nft kernel + user | add: eBPF | add: whole call | remove: nft kernel + user | remove: eBPF | remove: whole call | via | spoofed leaked |', '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
    for (const p of r.ports) {
      L.push(
        `| ${p.method} (${p.note}) | ${p.changes} | ${msRange(p.add.nftKernelMs)} + ${ms(p.add.nftUserMs?.median ?? Number.NaN)} | ${msRange(p.add.bpfMs)} | ${msRange(p.add.totalMs)} | ${msRange(p.remove.nftKernelMs)} + ${ms(p.remove.nftUserMs?.median ?? Number.NaN)} | ${msRange(p.remove.bpfMs)} | ${msRange(p.remove.totalMs)} | ${p.via} | ${p.leak.leaked} of ${p.leak.sent} (${p.leak.changes} changes) |`,
      );
    }
    L.push('');
  }

  // ---- learn ----
  if (r.learn) {
    const lr = r.learn;
    L.push('## IP learning: the teaching frame, then a spoofed flood (clean-traffic without IP, CTRL_IP_LEARNING=any)', '');
    L.push(
      `vnet0 bound without an IP on a fresh port each round (nwf-fast: \`loadGeneration\`; libvirt: \`virsh nwfilter-binding-create\` once its learning rules are in force). vm0 sends the teaching frame (source ${lr.teachIp}), then at once spoofed frames (its MAC, source ${lr.spoofIp}) at ${lr.spoofPerMs}/ms and legitimate frames (source ${lr.teachIp}) at ${lr.legitPerMs}/ms, for ${ms(lr.floodMs)} (longer while the address is not readable yet or spoofed frames still get through: until ${ms(300)} after both; at most ${ms(lr.maxMs)}). Every frame is tagged: delivered = reached the peer; times are send times after the teaching frame. Readable = the end of the first read that showed the address, one read in flight at a time (nwf-fast: the kernel read directly, the eBPF map lookup or the nft set listed through libnftables in-process; libvirt: \`ebtables-save\` shows it in vnet0's rules); learned the taught address = that read showed the teaching frame's source and, for nwf-fast, \`readLearnedFromKernel\` (what status reports) showed exactly it after the flood. Median (min–max) of ${lr.rounds} rounds; load average ${lr.loadavg.start.join(' ')} at the start of the phase, ${lr.loadavg.end.join(' ')} at its end.`,
      '',
    );
    L.push('| method | spoofed delivered / sent | last delivered spoofed frame sent at | first dropped spoofed frame sent at | address readable at | learned the taught address | legitimate delivered | setup |', '| --- | --- | --- | --- | --- | --- | --- | --- |');
    for (const row of lr.rows) {
      const reads = stat(row.rounds.map((x) => x.reads));
      const lvRules = row.method === 'libvirt' ? `; learning rules ${msRange(statOf(row.rounds.flatMap((x) => (x.learningRulesMs !== undefined ? [x.learningRulesMs] : []))))} after binding-create returned` : '';
      L.push(
        `| ${LEARN_LABELS[row.method]} | ${range(row.spoofDelivered, '', 0)} / ${range(row.spoofSent, '', 0)} | ${row.lastLeakMs.n ? `${msRange(row.lastLeakMs)} (${row.lastLeakMs.n} of ${row.rounds.length} rounds leaked)` : 'none delivered'} | ${msRange(row.firstDropMs)} | ${msRange(row.readableMs)} (${range(reads, '', 0)} reads, the last started at ${msRange(row.readStartMs)}) | ${row.learnedRight} of ${row.rounds.length} rounds | ${row.legitDelivered} of ${row.legitSent} | ${msRange(row.setupMs)}${lvRules} |`,
      );
    }
    if (lr.libvirt.alongside) L.push('', `libvirt ran alongside other libvirt daemons of the machine (${lr.libvirt.alongside}): their work is load on the same CPUs.`);
    if (!lr.libvirt.available) L.push('', `libvirt: not measured: ${lr.libvirt.reason}${lr.libvirt.error ? `: ${lr.libvirt.error.split('\n')[0]}` : ''}.`);
    L.push('');
  }

  // ---- dataplane ----
  if (r.dataplane) {
    const d = r.dataplane;
    L.push('## CPU cost per frame through the bridge', '');
    L.push(`60-byte UDP/IPv4 frames from the VM through the bridge to a peer namespace (≈${d.targetSeconds} s of traffic per measurement), on two paths into the host: ${(d.paths ?? ['veth']).map((p) => PATH_LABELS[p]).join('; ')}. CPU = the sender's CPU time (trafgen's, from bash \`times\`; the tap writer thread's over its write loop), which includes the bridge, filter and delivery work done in its softirq context, + ksoftirqd. ns per frame, median (min–max) of ${d.rounds} interleaved rounds, and the ratio to the no-filter run of the same round and path; spoofed frames also to the drop-all floor of the same hook (nft and libvirt: tc's) and to tc's.${d.ebtablesSource ? ` libvirt's rules: ${d.ebtablesRulesPerPort} ebtables rules per port, from ${d.ebtablesSource}, replicated for N ports with the sender's jump in the middle of PREROUTING.` : ''}`, '');
    const nMax = Math.max(...d.ns);
    for (const path of d.paths ?? ['veth']) {
      const ns = path === 'veth' ? d.ns : [nMax];
      L.push(`### ${PATH_LABELS[path]}`, '');
      for (const traffic of ['valid', 'spoof'] as const) {
        L.push(traffic === 'valid' ? '#### Valid frames (forwarded)' : "#### Spoofed frames (source IP not the VM's: dropped)", '');
        const refs: DpConfig[] = traffic === 'valid' ? ['none', 'none-brnf-off', 'tc-pass', 'tcx-pass', 'xdp-pass'] : ['none', 'tc-drop', 'tcx-drop', 'xdp-drop'];
        L.push('| configuration | ns per frame | vs no filter | ' + (traffic === 'spoof' ? 'vs tc floor | ' : '') + 'delivered |', '| --- | --- | --- | ' + (traffic === 'spoof' ? '--- | ' : '') + '--- |');
        for (const cfg of refs) {
          const c = cell(r, cfg, 0, traffic, path);
          if (c) L.push(`| ${DP_LABELS[cfg]} | ${range(c.nsPerFrame, '', 0)} | ${range(c.ratio, 'x')} | ${traffic === 'spoof' ? `${range(c.ratioTcFloor ?? c.ratioFloor, 'x')} | ` : ''}${fmt(c.deliveredFraction.median * 100, 1)}% |`);
        }
        L.push('');
        L.push(`| configuration | ${ns.map((n) => `N = ${n}`).join(' | ')} |`, `| --- | ${ns.map(() => '---').join(' | ')} |`);
        for (const cfg of ['libvirt-ebtables', 'nft', 'nft-noopt', 'ebpf-tc', 'ebpf-tcx', 'ebpf-xdp'] as const) {
          const cells = ns.map((n) => cell(r, cfg, n, traffic, path));
          if (cells.every((c) => !c)) continue;
          L.push(
            `| ${DP_LABELS[cfg]} | ${cells
              .map((c) => {
                if (!c) return '–';
                const floor = floorOf(cfg).replace('-drop', '');
                const extra = traffic === 'spoof' ? `, ${fmt(c.ratioFloor?.median ?? Number.NaN)}x ${floor} floor${floor !== 'tc' ? ` (${fmt(c.ratioTcFloor?.median ?? Number.NaN)}x tc floor)` : ''}` : '';
                const bad = traffic === 'valid' ? c.deliveredFraction.median < 0.999 : c.deliveredFraction.median > 0.001;
                return `${fmt(c.nsPerFrame.median, 0)} ns, **${fmt(c.ratio.median)}x** (${fmt(c.ratio.min)}–${fmt(c.ratio.max)})${extra}${bad ? `, ⚠ ${fmt(c.deliveredFraction.median * 100, 1)}% delivered` : ''}`;
              })
              .join(' | ')} |`,
          );
        }
        L.push('');
      }
    }
    L.push(`Setup times (not part of the per-frame cost), medians: ${Object.entries(d.setupMs).filter(([k]) => !k.endsWith('@0')).sort(([a], [b]) => { const [ca, na] = a.split('@'); const [cb, nb] = b.split('@'); return (ca as string).localeCompare(cb as string) || Number(na) - Number(nb); }).map(([k, v]) => `${k} ${ms(v.median)}`).join(', ')}.`, '');
  }

  // ---- compile ----
  if (r.compile?.length) {
    L.push('## Compile throughput (tinybench)', '');
    L.push('Median time (tinybench p50) per compile of all N interfaces (clean-traffic, one IP each), and interfaces per second.', '');
    const tasks = Object.values(COMPILE_TASKS);
    const sizes = [...new Set(r.compile.map((c) => c.n))];
    L.push(`| task | ${sizes.map((n) => `N = ${n}`).join(' | ')} |`, `| --- | ${sizes.map(() => '---').join(' | ')} |`);
    for (const t of tasks) {
      L.push(`| ${t} | ${sizes.map((n) => { const c = r.compile?.find((x) => x.n === n && x.task === t); return c ? `${ms(c.ms.median)} (${fmt(c.ifacesPerSec / 1000, 1)}k/s, ${c.peakRssMB !== undefined ? `peak RSS ${fmt(c.peakRssMB, 0)} MB` : `${c.samples} runs`})` : '–'; }).join(' | ')} |`);
    }
    L.push('');
  }
  L.push('## What is measured and what is not', '');
  L.push('- libvirt times beyond the measured N are extrapolated (labelled). libvirt is driven through virsh, so each binding includes a virsh start and connection (tens of ms); the rest is libvirtd running ebtables (≈127 processes per binding).');
  L.push('- libvirt\'s data-plane rules are libvirt\'s own (captured with ebtables-save) replicated for N ports with ebtables-restore, not N real bindings.');
  L.push('- The ports other than the sender are veths without traffic; nft and eBPF state exists for all N. CPU figures come from one sender pinned to CPU0; other work on the machine can still disturb them (min–max shows the spread).');
  L.push('- The tap path: vnet0 is a real tap device; the writer opens /dev/net/tun, attaches with TUNSETIFF (IFF_TAP | IFF_NO_PI) and writes each frame with one non-blocking write(2), as QEMU\'s user-space virtio-net backend does; tun then runs an XDP program natively on the frame before building the skb. With vhost-net (not on this machine) tun is fed in batches from a kernel thread instead. The writer is pinned to CPU0 like trafgen.');
  L.push("- Leaks are counted exactly: an nft counter on the peer's ingress matches the flood's source address.");
  if (r.learn) L.push("- IP learning: the frames come from one packet socket driven by the benchmark's own event loop; on a loaded machine its rate falls below the nominal one (the sent counts say what was sent) and its first frames may go out late (the send times say when). The address reads are polled, one at a time: libvirt's start an ebtables-save process each, which takes tens of ms and stalls the loop while it forks, so libvirt's readable time is coarse and its frames go out in bursts (at most 100 a turn): its leak times are good to a few tens of ms.");
  L.push("- nft set-delta is nwf-fast's incremental load: the typed element diff of two whole generations lowered under the live tag (host/load-plan.ts, the compile column) sent as one nf_tables transaction on the live sets (the live column) through nwf-fast's netlink encoder (host/nfnl) on a socket kept open; nft-set-delta-libnftables sends the same delta through libnftables, whose client first reads the whole table into its cache and whose socket close waits for an RCU grace period (the destroy work of the deleted elements).");
  L.push('');
  return `${L.join('\n')}\n`;
}

function statOf(xs: number[]): Stat {
  const v = [...xs].sort((a, b) => a - b);
  if (!v.length) return { median: Number.NaN, min: Number.NaN, max: Number.NaN, n: 0 };
  const m = v.length >> 1;
  return { median: v.length % 2 ? (v[m] as number) : ((v[m - 1] as number) + (v[m] as number)) / 2, min: v[0] as number, max: v[v.length - 1] as number, n: v.length };
}

// ---- SVG ------------------------------------------------------------------------------------

const COLORS = { libvirt: '#c0392b', nftLib: '#2471a3', nftBin: '#7fb3d5', nftNl: '#154360', ebpf: '#1e8449', ebpfTap: '#7dcea0', ebpfXdp: '#af7ac5', ref: '#888888' };
const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

interface Panel {
  x: number;
  y: number;
  w: number;
  h: number;
  title: string;
  xLabel: string;
  yLabel: string;
  xs: number[];
  yLog: boolean;
  yMin: number;
  yMax: number;
  series: { name: string; color: string; points: { x: number; y: number; lo?: number; hi?: number; dashed?: boolean }[] }[];
  hlines: { y: number; label: string; anchor?: 'start' | 'middle' | 'end'; below?: boolean }[];
  yFmt: (v: number) => string;
}

function niceLogTicks(min: number, max: number): number[] {
  const out: number[] = [];
  for (let e = Math.floor(Math.log10(min)); e <= Math.ceil(Math.log10(max)); e++) {
    const v = 10 ** e;
    if (v >= min * 0.999 && v <= max * 1.001) out.push(v);
  }
  return out;
}

function linTicks(min: number, max: number): number[] {
  const span = max - min;
  const step = span > 20 ? 10 : span > 8 ? 2 : span > 4 ? 1 : span > 1.5 ? 0.5 : 0.1;
  const out: number[] = [];
  for (let v = Math.ceil(min / step) * step; v <= max + 1e-9; v += step) out.push(Math.round(v * 100) / 100);
  return out;
}

const tickLabel = (v: number, unitMs = false): string => {
  if (!unitMs) return v >= 1000 ? `${v / 1000}k` : String(v);
  if (v >= 1000) return `${v / 1000} s`;
  return `${v} ms`;
};

function drawPanel(p: Panel): string {
  const S: string[] = [];
  const left = p.x + 60;
  const top = p.y + 30;
  const w = p.w - 80;
  const h = p.h - 80;
  const lx = (v: number): number => left + ((Math.log10(v) - Math.log10(p.xs[0] as number)) / (Math.log10(p.xs[p.xs.length - 1] as number) - Math.log10(p.xs[0] as number))) * w;
  const ly = (v: number): number => {
    const c = Math.min(Math.max(v, p.yMin), p.yMax);
    const f = p.yLog ? (Math.log10(c) - Math.log10(p.yMin)) / (Math.log10(p.yMax) - Math.log10(p.yMin)) : (c - p.yMin) / (p.yMax - p.yMin);
    return top + h - f * h;
  };
  S.push(`<text x="${p.x + p.w / 2}" y="${p.y + 16}" text-anchor="middle" font-size="14" font-weight="bold">${esc(p.title)}</text>`);
  S.push(`<rect x="${left}" y="${top}" width="${w}" height="${h}" fill="none" stroke="#444"/>`);
  for (const t of p.yLog ? niceLogTicks(p.yMin, p.yMax) : linTicks(p.yMin, p.yMax)) {
    const y = ly(t);
    S.push(`<line x1="${left}" x2="${left + w}" y1="${y}" y2="${y}" stroke="#e5e5e5"/>`);
    S.push(`<text x="${left - 6}" y="${y + 4}" text-anchor="end" font-size="11">${esc(p.yFmt(t))}</text>`);
  }
  for (const xv of p.xs) {
    const x = lx(xv);
    S.push(`<line x1="${x}" x2="${x}" y1="${top}" y2="${top + h}" stroke="#f0f0f0"/>`);
    S.push(`<text x="${x}" y="${top + h + 16}" text-anchor="middle" font-size="11">${tickLabel(xv)}</text>`);
  }
  S.push(`<text x="${left + w / 2}" y="${top + h + 34}" text-anchor="middle" font-size="12">${esc(p.xLabel)}</text>`);
  S.push(`<text x="${p.x + 14}" y="${top + h / 2}" text-anchor="middle" font-size="12" transform="rotate(-90 ${p.x + 14} ${top + h / 2})">${esc(p.yLabel)}</text>`);
  for (const hl of p.hlines) {
    const y = ly(hl.y);
    S.push(`<line x1="${left}" x2="${left + w}" y1="${y}" y2="${y}" stroke="#b7950b" stroke-dasharray="6 4"/>`);
    const anchor = hl.anchor ?? 'end';
    const tx = anchor === 'start' ? left + 4 : anchor === 'middle' ? left + w / 2 : left + w - 4;
    S.push(`<text x="${tx}" y="${hl.below ? y + 12 : y - 4}" text-anchor="${anchor}" font-size="10" fill="#b7950b">${esc(hl.label)}</text>`);
  }
  let legendY = top + 14;
  for (const s of p.series) {
    if (!s.points.length) continue;
    const solid = s.points.filter((q) => !q.dashed);
    const dashed = s.points.filter((q, i) => q.dashed || (i + 1 < s.points.length && s.points[i + 1]?.dashed));
    const path = (pts: typeof s.points): string => pts.map((q, i) => `${i ? 'L' : 'M'}${lx(q.x).toFixed(1)},${ly(q.y).toFixed(1)}`).join(' ');
    if (solid.length > 1) S.push(`<path d="${path(solid)}" fill="none" stroke="${s.color}" stroke-width="2"/>`);
    if (dashed.length > 1) S.push(`<path d="${path(dashed)}" fill="none" stroke="${s.color}" stroke-width="2" stroke-dasharray="5 4"/>`);
    for (const q of s.points) {
      const x = lx(q.x);
      if (q.lo !== undefined && q.hi !== undefined) S.push(`<line x1="${x}" x2="${x}" y1="${ly(q.lo)}" y2="${ly(q.hi)}" stroke="${s.color}" stroke-width="1"/>`);
      if (q.y > p.yMax) {
        // Off the scale: a marker at the top edge with the value.
        S.push(`<path d="M${x - 5},${top + 8} L${x + 5},${top + 8} L${x},${top + 1} Z" fill="${s.color}"/>`);
        S.push(`<text x="${x + (x > left + w - 30 ? -7 : 7)}" y="${top + 20}" text-anchor="${x > left + w - 30 ? 'end' : 'start'}" font-size="10" fill="${s.color}">${esc(p.yFmt(Math.round(q.y * 10) / 10))}</text>`);
      } else {
        S.push(`<circle cx="${x}" cy="${ly(q.y)}" r="3" fill="${q.dashed ? '#fff' : s.color}" stroke="${s.color}"/>`);
      }
    }
    S.push(`<line x1="${left + 8}" x2="${left + 26}" y1="${legendY - 4}" y2="${legendY - 4}" stroke="${s.color}" stroke-width="2"/>`);
    S.push(`<text x="${left + 30}" y="${legendY}" font-size="11">${esc(s.name)}</text>`);
    legendY += 15;
  }
  return S.join('\n');
}

export function renderSvg(r: BenchResults): string {
  const ns = r.config.ns;
  const panels: string[] = [];
  const W = 400;
  const H = 380;
  // 1: protect time
  {
    const series: Panel['series'] = [];
    if (r.libvirt?.available) {
      series.push({
        name: 'libvirt (open = extrapolated)',
        color: COLORS.libvirt,
        points: ns.flatMap((n) => {
          const p = libvirtProtectMs(r.libvirt as NonNullable<BenchResults['libvirt']>, n);
          return p ? [{ x: n, y: p.ms, dashed: p.extrapolated }] : [];
        }),
      });
    }
    const prot = (m: ProtectMethod, name: string, color: string): void => {
      series.push({ name, color, points: ns.flatMap((n) => { const row = protectRow(r, m, n); return row ? [{ x: n, y: row.totalMs.median, lo: row.totalMs.min, hi: row.totalMs.max }] : []; }) });
    };
    prot('nft-libnftables', 'nft, libnftables', COLORS.nftLib);
    prot('nft-binary', 'nft, nft binary', COLORS.nftBin);
    prot('nft-netlink', 'nft, netlink batch', COLORS.nftNl);
    prot('ebpf', 'eBPF', COLORS.ebpf);
    const ys = series.flatMap((s) => s.points.map((q) => q.y)).filter((y) => y > 0);
    panels.push(
      drawPanel(
        { x: 0, y: 0, w: W, h: H, title: 'Time to protect N interfaces', xLabel: 'interfaces (clean-traffic)', yLabel: 'time (log)', xs: ns, yLog: true, yMin: 10 ** Math.floor(Math.log10(Math.min(1, ...ys))), yMax: 10 ** Math.ceil(Math.log10(Math.max(2000, ...ys))), series, hlines: [{ y: 300, label: 'target: 1000 in < 0.3 s', below: true, anchor: 'middle' }], yFmt: (v) => tickLabel(v, true) },
      ),
    );
  }
  // 2 and 3: per-frame ratios
  for (const [i, traffic] of (['valid', 'spoof'] as const).entries()) {
    const series: Panel['series'] = [];
    const add = (config: DpConfig, name: string, color: string): void => {
      series.push({
        name,
        color,
        points: ns.flatMap((n) => {
          const c = cell(r, config, n, traffic);
          const s = traffic === 'valid' ? c?.ratio : c?.ratioFloor;
          return s && s.n ? [{ x: n, y: s.median, lo: s.min, hi: s.max }] : [];
        }),
      });
    };
    add('libvirt-ebtables', "libvirt's ebtables", COLORS.libvirt);
    add('nft', 'nwf-fast nft', COLORS.nftLib);
    add('ebpf-tc', 'nwf-fast eBPF, tc (veth)', COLORS.ebpf);
    // the tap path and the other hooks are measured at the largest N only: one point each
    const nMax = Math.max(...ns);
    const one = (config: DpConfig, path: DpPath, name: string, color: string): void => {
      const c = cell(r, config, nMax, traffic, path);
      const st = traffic === 'valid' ? c?.ratio : c?.ratioFloor;
      if (st && st.n) series.push({ name, color, points: [{ x: nMax, y: st.median, lo: st.min, hi: st.max }] });
    };
    one('ebpf-tc', 'tap', 'nwf-fast eBPF, tc (tap)', COLORS.ebpfTap);
    one('ebpf-xdp', 'tap', 'nwf-fast eBPF, xdp (tap)', COLORS.ebpfXdp);
    // Linear scale fitted to nwf-fast's series (libvirt's larger ratios are marked at the top edge with their value).
    const ys = series.filter((x) => x.color !== COLORS.libvirt).flatMap((x) => x.points.flatMap((q) => [q.y, q.hi ?? q.y]));
    const yMax = Math.max(1.3, ...ys.filter(Number.isFinite)) * 1.08;
    panels.push(
      `<g transform="translate(${(i + 1) * W},0)">${drawPanel(
        {
          x: 0,
          y: 0,
          w: W,
          h: H,
          title: traffic === 'valid' ? 'CPU per valid frame vs no filter' : 'CPU per spoofed frame vs drop floor',
          xLabel: 'protected ports on the bridge',
          yLabel: traffic === 'valid' ? 'CPU ratio to no filter' : 'CPU ratio to the same hook\'s drop-all program',
          xs: ns,
          yLog: false,
          yMin: 0.8,
          yMax: Math.ceil(yMax * 10) / 10,
          series,
          hlines: traffic === 'valid' ? [{ y: 1.05, label: 'eBPF target 1.05x' }, { y: 1.15, label: 'nft target 1.15x', anchor: 'start' }] : [{ y: 1.05, label: 'eBPF target 1.05x' }],
          yFmt: (v) => `${v}x`,
        },
      )}</g>`,
    );
  }
  const width = W * 3;
  const height = H + 30;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="DejaVu Sans, Arial, sans-serif">`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    ...panels,
    `<text x="${width / 2}" y="${height - 8}" text-anchor="middle" font-size="11" fill="#555">${esc(`nwf-fast bench (${r.mode}), ${r.startedAt.slice(0, 10)}, ${r.env.cpuModel} x${r.env.cpus}, ${r.env.kernel}; medians, bars = min–max`)}</text>`,
    '</svg>',
    '',
  ].join('\n');
}
