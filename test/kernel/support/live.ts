// Shared machinery of the live-host kernel tests: domain XML as libvirt's
// hook passes it, a spoofed flood counted at the peer, listings of libvirt's
// ebtables/iptables rules, and a VirshClient over a private libvirtd.
import { execa } from 'execa';
import type { Libvirtd } from '../../../src/lab/libvirt.js';
import { join } from 'node:path';
import { PacketSocket } from '../../../src/lab/packet-io.js';
import type { Testbed } from '../../../src/lab/testbed.js';
import type { VirshClient } from '../../../src/host/live/observe.js';

export interface NicSpec {
  tap: string;
  mac: string;
  filter?: string;
  params?: Record<string, string | string[]>;
  /** Put the filterref in nwf-fast's metadata instead of the interface (native mode). */
  metadata?: boolean;
}

const param = (params: Record<string, string | string[]> | undefined, prefix = ''): string =>
  Object.entries(params ?? {})
    .flatMap(([k, v]) => (Array.isArray(v) ? v : [v]).map((x) => `<${prefix}parameter name='${k}' value='${x}'/>`))
    .join('');

/** A running domain's XML as libvirt gives it to a qemu hook (start begin: with <target dev>). */
export function hookDomainXml(name: string, uuid: string, nics: readonly NicSpec[]): string {
  const meta = nics.filter((n) => n.metadata && n.filter);
  return [
    `<domain type='qemu' id='1'>`,
    `  <name>${name}</name>`,
    `  <uuid>${uuid}</uuid>`,
    ...(meta.length
      ? [
          '  <metadata>',
          `    <nwf:filters xmlns:nwf='urn:x-nwf-fast:metadata:1'>`,
          ...meta.map((n) => `      <nwf:interface mac='${n.mac}'><nwf:filterref filter='${n.filter}'>${param(n.params, 'nwf:')}</nwf:filterref></nwf:interface>`),
          '    </nwf:filters>',
          '  </metadata>',
        ]
      : []),
    `  <memory unit='KiB'>131072</memory>`,
    '  <devices>',
    ...nics.map((n) =>
      [
        `    <interface type='bridge'>`,
        `      <mac address='${n.mac}'/>`,
        `      <source bridge='br0'/>`,
        `      <target dev='${n.tap}'/>`,
        `      <model type='virtio'/>`,
        ...(n.filter && !n.metadata ? [`      <filterref filter='${n.filter}'>${param(n.params)}</filterref>`] : []),
        `    </interface>`,
      ].join('\n'),
    ),
    '  </devices>',
    '</domain>',
    '',
  ].join('\n');
}

/** ebtables-save, iptables-save and ip6tables-save of a namespace, without their timestamp comments. */
export async function xtSaves(ns: string): Promise<{ eb: string; ip: string; ip6: string }> {
  const save = async (tool: string): Promise<string> =>
    (await execa('ip', ['netns', 'exec', ns, tool], { timeout: 30_000 })).stdout
      .split('\n')
      .filter((l) => !l.startsWith('#'))
      .join('\n');
  const [eb, ip, ip6] = await Promise.all([save('ebtables-save'), save('iptables-save'), save('ip6tables-save')]);
  return { eb, ip, ip6 };
}

/** Lines of b not in a, and of a not in b. */
export function lineDiff(a: string, b: string): { added: string[]; removed: string[] } {
  const A = a.split('\n');
  const B = b.split('\n');
  return { added: B.filter((l) => !A.includes(l)), removed: A.filter((l) => !B.includes(l)) };
}

/** Packets counted by the rules of a chain of libvirt's in the namespace (nft's view of ebtables/iptables-nft). */
export async function chainPackets(ns: string, family: 'bridge' | 'ip', table: string, chain: string): Promise<number> {
  const r = await execa('ip', ['netns', 'exec', ns, 'nft', '-j', 'list', 'chain', family, table, chain], { reject: false, timeout: 30_000 });
  if (r.exitCode !== 0) return 0;
  let n = 0;
  for (const o of (JSON.parse(r.stdout) as { nftables: { rule?: { expr?: { counter?: { packets: number } }[] } }[] }).nftables) {
    for (const e of o.rule?.expr ?? []) if (e.counter) n += e.counter.packets;
  }
  return n;
}

/** A VirshClient that runs virsh in a private libvirtd's mount namespace. */
export function privateVirsh(lv: Libvirtd): VirshClient {
  return {
    uri: `private libvirtd in ${lv.netns}`,
    async run(args) {
      const r = await lv.virsh(args, { check: false });
      return { exitCode: r.exitCode, stdout: r.stdout, stderr: r.stderr };
    },
  };
}

export interface FloodSource {
  /** The guest (by testbed name) sending. */
  guest: string;
  srcMac: string;
  srcIp: string;
  spoofed: boolean;
}

export interface Flood {
  sent: { spoofed: number; legit: number };
  delivered: { spoofed: number; legit: number };
  /** Waits (bounded by ms) until at least n spoofed frames arrived or were sent (the receiver counts as it reads). */
  atLeast(n: number, ms?: number): Promise<void>;
  stop(): Promise<Flood>;
}

const SENDER = join(import.meta.dirname, '..', '..', 'support', 'flood-sender.ts');

/**
 * Each source sends `pps` frames/s to the peer from its own process (so the
 * flood goes on while this process is busy), for at most maxS seconds; the
 * peer counts what arrives by a tag in the payload (spoofed or legitimate).
 */
export async function startFlood(tb: Testbed, peer: string, sources: readonly FloodSource[], pps = 500, maxS = 300): Promise<Flood> {
  const p = tb.guest(peer);
  const dstIp = p.ipv4[0]?.split('/')[0] ?? '10.0.0.254';
  const rx = PacketSocket.open(p.ns, 'eth0', { receive: true, rcvbufBytes: 64 << 20 });
  rx.drain();
  const senders = sources.map((s) => {
    const proc = execa(process.execPath, ['--import', 'tsx', SENDER, tb.guest(s.guest).ns, s.srcMac, s.srcIp, p.mac, dstIp, s.spoofed ? '1' : '2', String(pps), String(maxS)], { stdin: 'pipe', reject: false, timeout: (maxS + 30) * 1000 });
    const x = { s, proc, ready: false, sent: 0 };
    proc.stdout?.on('data', (d: Buffer) => {
      for (const l of String(d).split('\n')) {
        if (l === 'ready') x.ready = true;
        else if (/^\d+$/.test(l)) x.sent = Number(l);
      }
    });
    return x;
  });
  const sentSpoofed = (): number => senders.filter((x) => x.s.spoofed).reduce((a, x) => a + x.sent, 0);
  const until = async (cond: () => boolean, ms: number): Promise<void> => {
    const end = Date.now() + ms;
    while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
  };
  const f: Flood = {
    sent: { spoofed: 0, legit: 0 },
    delivered: { spoofed: 0, legit: 0 },
    atLeast: (n, ms = 10_000) => until(() => sentSpoofed() >= n, ms),
    stop: async () => {
      clearInterval(timer);
      for (const x of senders) x.proc.stdin?.end();
      for (const x of senders) {
        await x.proc;
        if (x.s.spoofed) f.sent.spoofed += x.sent;
        else f.sent.legit += x.sent;
      }
      await new Promise((r) => setTimeout(r, 300));
      read();
      rx.close();
      return f;
    },
  };
  const read = (): void => {
    for (const fr of rx.receiveNow()) {
      const s = Buffer.from(fr).toString('latin1');
      if (s.includes('NW\u0000\u0001')) f.delivered.spoofed++;
      else if (s.includes('NW\u0000\u0002')) f.delivered.legit++;
    }
  };
  const timer = setInterval(read, 20);
  // every sender sending before the work starts
  await until(() => senders.every((x) => x.ready && x.sent > 0), 30_000);
  return f;
}

/** Polls `probe` every `everyMs` until it is true or `ms` pass; returns how long it took, or undefined. */
export async function within(ms: number, probe: () => Promise<boolean> | boolean, everyMs = 50): Promise<number | undefined> {
  const t0 = performance.now();
  for (;;) {
    if (await probe()) return performance.now() - t0;
    if (performance.now() - t0 > ms) return undefined;
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
