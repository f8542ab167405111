// IP learning in tc/eBPF (docs/design/ip-learning.md section 2.2): builds
// learn.bpf.c with clang, loads it through nwf-fast's libbpf binding (the
// verifier must accept the bounded DHCP option walk and the compare-and-swap),
// then:
//   - parser: BPF_PROG_TEST_RUN of DHCP replies with the message type and the
//     lease time at varying places, and malformed ones;
//   - any:    on a real bridge, before/after learning, a spoofed flood right
//             after the first packet (0 may pass);
//   - race:   two CPUs send two sources at the same instant to a fresh port,
//             N trials, with BPF_NOEXIST (first writer wins) and with a naive
//             BPF_ANY update (last writer wins) for comparison;
//   - dhcp:   DHCP-only before, untrusted and trusted ACKs, expiry of a short
//             lease, renewal, DHCPRELEASE, and what user space reads back.
//
// Run (root, clang-19, libbpf): npx tsx docs/design/proto/bpf-learning.ts [--only parser,any,race,dhcp] [--trials N]
import { execa } from 'execa';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BpfObject, BPF_ANY, ifIndex, tcHookCreate, tcReplace, TC_ACT, u32, withNetns, type BpfMap } from '../../../src/host/bpf/libbpf.js';
import { PacketSocket, settlePacketSockets } from '../../../src/lab/packet-io.js';
import * as F from '../../../src/lab/frames/build.js';
import { createTestbed, type Testbed } from '../../../src/lab/testbed.js';
import { DHCP, dhcpServerFrame, filler } from './dhcp.js';
import { anyBeforeProbes, Checks, isRootOrSay, raceTrial, dhcpBeforeProbes, floodAfter, inFrames, lockedProbes, makeHub, outFrames, passes, PinnedSender, ROGUE, runProbes, runScenario, scriptArgs, SERVER, sleep } from './common.js';

const MAC = ['52:54:00:00:00:01', '52:54:00:00:00:02', '52:54:00:00:00:03'] as const;
const PEER_MAC = '52:54:00:00:00:99';
const MODE_ANY = 1;
const MODE_DHCP = 2;
const LEASES = 4;

const macImage = (mac: string): Buffer => Buffer.concat([Buffer.from(F.mac(mac)), Buffer.alloc(2)]);
const ipImage = (ip: string): Buffer => Buffer.from(F.ipv4(ip));
const ipOf = (b: Buffer, off: number): string => [...b.subarray(off, off + 4)].join('.');

async function build(naive: boolean): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'nwf-lrn-bpf-'));
  const out = join(dir, 'learn.bpf.o');
  const src = fileURLToPath(new URL('./learn.bpf.c', import.meta.url));
  try {
    await execa('clang-19', ['-O2', '-g', '-target', 'bpf', '-mcpu=v3', '-Wall', '-Werror', '-I/usr/include/x86_64-linux-gnu', ...(naive ? ['-DNWF_NAIVE'] : []), '-c', src, '-o', out], { timeout: 120_000 });
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  return out;
}

class Rig {
  obj!: BpfObject;
  ifx: Record<string, number> = {};

  constructor(
    readonly tb: Testbed,
    readonly c: Checks,
  ) {}

  map(name: string): BpfMap {
    return this.obj.map(name);
  }

  /** Loads an object and attaches it to vnet0 and vnet2, replacing the programs there (tc BPF_TC_F_REPLACE); configures the ports. */
  async attachReplace(naive: boolean): Promise<void> {
    const file = await build(naive);
    let obj: BpfObject;
    try {
      obj = BpfObject.open(file).load();
    } finally {
      rmSync(join(file, '..'), { recursive: true, force: true });
    }
    withNetns(this.tb.hostNs, () => {
      for (const tap of ['vnet0', 'vnet2']) {
        const ifindex = ifIndex(tap);
        this.ifx[tap] = ifindex;
        tcHookCreate(ifindex);
        tcReplace(obj.program('lrn_from_vm'), { ifindex, direction: 'ingress', handle: 1, priority: 1 });
        tcReplace(obj.program('lrn_to_vm'), { ifindex, direction: 'egress', handle: 1, priority: 1 });
      }
    });
    this.obj?.close();
    this.obj = obj;
    this.configure();
  }

  /** Port configuration: vnet0 any, vnet2 dhcp with DHCPSERVER; state maps cleared. */
  configure(): void {
    const cfg = (mac: string, mode: number, servers: string[]): Buffer => {
      const b = Buffer.alloc(8 + 4 + 4 + 16);
      macImage(mac).copy(b, 0);
      b.writeUInt32LE(mode, 8);
      b.writeUInt32LE(servers.length, 12);
      servers.forEach((s, i) => ipImage(s).copy(b, 16 + 4 * i));
      return b;
    };
    this.map('nwf_lrn_port').update(u32(this.ifx.vnet0 as number), cfg(MAC[0], MODE_ANY, []), BPF_ANY);
    this.map('nwf_lrn_port').update(u32(this.ifx.vnet2 as number), cfg(MAC[2], MODE_DHCP, [SERVER]), BPF_ANY);
    this.resetAny();
    this.resetDhcp();
  }

  resetAny(): void {
    this.map('nwf_lrn_any').delete(u32(this.ifx.vnet0 as number));
  }

  resetDhcp(): void {
    this.map('nwf_lrn_dhcp').update(u32(this.ifx.vnet2 as number), Buffer.alloc(16 * LEASES), BPF_ANY);
  }

  /** What user space reads back: the learned address of an `any` port. */
  learnedAny(): string | undefined {
    const v = this.map('nwf_lrn_any').lookup(u32(this.ifx.vnet0 as number));
    return v ? ipOf(v, 0) : undefined;
  }

  /** Live and expired leases of the dhcp port, expiry as seconds from now (CLOCK_BOOTTIME via /proc/uptime). */
  leases(): { ip: string; inS: number | 'infinite' }[] {
    const v = this.map('nwf_lrn_dhcp').lookup(u32(this.ifx.vnet2 as number));
    if (!v) return [];
    const nowNs = BigInt(Math.round(Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]) * 1e9));
    const out: { ip: string; inS: number | 'infinite' }[] = [];
    for (let i = 0; i < LEASES; i++) {
      const word = v.readBigUInt64LE(16 * i);
      const exp = v.readBigUInt64LE(16 * i + 8);
      if (!(word & (1n << 32n))) continue;
      out.push({ ip: ipOf(v, 16 * i), inS: exp === 0xffffffffffffffffn ? 'infinite' : Math.round(Number(exp - nowNs) / 1e8) / 10 });
    }
    return out;
  }

  liveLeases(): string[] {
    return this.leases()
      .filter((l) => l.inS === 'infinite' || l.inS > 0)
      .map((l) => l.ip)
      .sort();
  }

  stat(k: number): bigint {
    return this.map('nwf_lrn_stats').lookup(u32(k))?.readBigUInt64LE(0) ?? -1n;
  }

  ep(name: string) {
    return this.tb.guest(name).endpoint;
  }
}

// ---- scenarios --------------------------------------------------------------------------

function scenarioParser(r: Rig): void {
  const S = 'bpf-parser';
  const c = r.c;
  const prog = r.obj.program('lrn_to_vm');
  const ack = (o: Parameters<ReturnType<typeof inFrames>['reply']>[3] & { type?: number; server?: string; yiaddr?: string; trailer?: Uint8Array; noEnd?: boolean } = {}): Uint8Array => {
    const f = dhcpServerFrame({
      srcMac: PEER_MAC,
      srcIp: o.server ?? SERVER,
      dstIp: '255.255.255.255',
      message: {
        op: 2,
        yiaddr: o.yiaddr ?? '10.77.0.2',
        chaddr: o.chaddr ?? MAC[2],
        type: o.type ?? DHCP.ACK,
        ...(o.lease !== undefined ? { leaseSeconds: o.lease } : {}),
        padAfterMagic: o.pad ?? 0,
        leading: filler(o.leading ?? 0),
        ...(o.noEnd ? { noEnd: true } : {}),
      },
    });
    return o.trailer ? Buffer.concat([f, o.trailer]) : f;
  };
  const ctx = Buffer.alloc(192);
  ctx.writeUInt32LE(r.ifx.vnet2 as number, 40); // __sk_buff.ifindex
  const run = (frame: Uint8Array): { retval: number; leases: string[] } => {
    r.resetDhcp();
    const res = withNetns(r.tb.hostNs, () => prog.testRun(frame, { ctxIn: ctx }));
    return { retval: res.retval, leases: r.liveLeases() };
  };
  const L = ['10.77.0.2'];
  c.check(S, 'ACK, 53 then 51 first', { retval: TC_ACT.OK, leases: L }, run(ack({ lease: 60 })));
  c.check(S, 'ACK, 53 and 51 after 6 options of 40 bytes (offset > 255 from the UDP header)', { retval: TC_ACT.OK, leases: L }, run(ack({ lease: 60, leading: 6 })));
  c.check(S, 'ACK, 3 PAD bytes first', { retval: TC_ACT.OK, leases: L }, run(ack({ lease: 60, pad: 3 })));
  c.check(S, 'ACK without a lease time (51): not learned', { retval: TC_ACT.OK, leases: [] }, run(ack({})));
  c.check(S, 'OFFER: not learned', { retval: TC_ACT.OK, leases: [] }, run(ack({ type: DHCP.OFFER, lease: 60 })));
  c.check(S, 'NAK: not learned', { retval: TC_ACT.OK, leases: [] }, run(ack({ type: DHCP.NAK, lease: 60 })));
  c.check(S, 'ACK for another chaddr: not learned', { retval: TC_ACT.OK, leases: [] }, run(ack({ lease: 60, chaddr: MAC[0] })));
  c.check(S, 'ACK from an untrusted server: dropped, not learned', { retval: TC_ACT.SHOT, leases: [] }, run(ack({ lease: 60, server: ROGUE })));
  c.check(S, 'ACK without END whose options end with the frame: not learned', { retval: TC_ACT.OK, leases: [] }, run(ack({ lease: 60, noEnd: true })));
  c.check(S, 'ACK with 70 options before 53 (more than the bound of 64): not learned', { retval: TC_ACT.OK, leases: [] }, run(ack({ lease: 60, leading: 70 })));
  // A truncated option: 51 claims 4 bytes, the frame ends after 2.
  const trunc = ack({ lease: 60 });
  c.check(S, 'ACK cut inside option 51: not learned', { retval: TC_ACT.OK, leases: [] }, run(trunc.subarray(0, trunc.length - 3)));
  const inf = run(ack({ lease: 0xffffffff }));
  c.check(S, 'ACK with an infinite lease', { retval: TC_ACT.OK, leases: L }, inf);
  r.resetDhcp();
}

async function scenarioAny(r: Rig): Promise<void> {
  const S = 'bpf-any';
  const c = r.c;
  const o = outFrames(MAC[0], PEER_MAC);
  const send = (dir: 'out' | 'in', f: Uint8Array): Promise<boolean> => (dir === 'out' ? passes(r.ep('vm0'), r.ep('peer'), f) : passes(r.ep('peer'), r.ep('vm0'), f));
  r.resetAny();
  await runProbes(c, S, 'before', anyBeforeProbes(MAC[0], PEER_MAC), send);
  c.check(S, 'before: nothing learned', undefined, r.learnedAny());
  // The first packet, then a flood of spoofed sources.
  const w = await floodAfter(r.ep('vm0'), r.ep('peer'), o.udp('10.77.0.2'), { mac: MAC[0], peerMac: PEER_MAC, ip: '10.77.0.66' }, 1500);
  c.note('bpf-any: flood after the teaching frame', w);
  c.check(S, 'the teaching frame passes', true, w.teachArrived);
  c.check(S, 'spoofed frames leaked after the teaching frame', 0, w.leaked);
  c.check(S, 'learned (read back by user space)', '10.77.0.2', r.learnedAny());
  await runProbes(c, S, 'after', lockedProbes(MAC[0], PEER_MAC, '10.77.0.2'), send);
  c.check(S, 'a second address is never learned', '10.77.0.2', r.learnedAny());
}

async function scenarioRace(r: Rig, trials: number): Promise<void> {
  const c = r.c;
  const s0 = PinnedSender.start(0, r.ep('vm0'), MAC[0], PEER_MAC, '10.77.0.9');
  const s1 = PinnedSender.start(1, r.ep('vm0'), MAC[0], PEER_MAC, '10.77.0.9');
  const rx = PacketSocket.open(r.ep('peer').ns, 'eth0');
  try {
    for (const naive of [false, true]) {
      const S = naive ? 'bpf-race-naive' : 'bpf-race-noexist';
      await r.attachReplace(naive);
      let bothDelivered = 0;
      let loserDelivered = 0;
      let lost = 0n;
      for (let t = 0; t < trials; t++) {
        r.resetAny();
        const lost0 = r.stat(7);
        const { got } = await raceTrial(s0, s1, rx);
        lost += r.stat(7) - lost0;
        if (got[1] > 0 && got[2] > 0) bothDelivered++;
        const winner = r.learnedAny() === '10.77.1.1' ? 1 : 2;
        loserDelivered += got[winner === 1 ? 2 : 1];
      }
      c.note(`${S}: trials where frames of both sources were delivered`, `${bothDelivered} of ${trials}`);
      c.note(`${S}: frames that found the address taken by the other CPU (lost race)`, Number(lost));
      if (!naive) {
        c.check(S, `${trials} trials: frames of both sources delivered`, 0, bothDelivered);
        c.check(S, `${trials} trials: frames of the losing source delivered`, 0, loserDelivered);
      }
    }
  } finally {
    rx.close();
    await s0.stop();
    await s1.stop();
  }
  await r.attachReplace(false);
}

async function scenarioDhcp(r: Rig): Promise<void> {
  const S = 'bpf-dhcp';
  const c = r.c;
  const o = outFrames(MAC[2], PEER_MAC);
  const i = inFrames(MAC[2], PEER_MAC);
  const out = (f: Uint8Array) => passes(r.ep('vm2'), r.ep('peer'), f);
  const inn = (f: Uint8Array) => passes(r.ep('peer'), r.ep('vm2'), f);
  r.resetDhcp();
  await runProbes(c, S, 'before', dhcpBeforeProbes(MAC[2], PEER_MAC), (dir, f) => (dir === 'out' ? out(f) : inn(f)));
  c.check(S, 'an OFFER and an untrusted ACK teach nothing', [], r.liveLeases());
  c.check(S, 'in trusted ACK (53 after 6 long options, 4 s lease) passes', true, await inn(i.reply(DHCP.ACK, SERVER, '10.77.0.2', { lease: 4, leading: 6, dstMac: MAC[2] })));
  c.check(S, 'learned', ['10.77.0.2'], r.liveLeases());
  c.note('bpf-dhcp: leases as user space reads them', r.leases());
  c.check(S, 'after: out from .2 passes', true, await out(o.udp('10.77.0.2')));
  c.check(S, 'after: out from .3 drops', false, await out(o.udp('10.77.0.3')));
  c.check(S, 'after: in ACK from an untrusted server passes the policy, teaches nothing', [true, ['10.77.0.2']], [await inn(i.reply(DHCP.ACK, ROGUE, '10.77.0.41', { lease: 60 })), r.liveLeases()]);
  c.check(S, 'a second trusted lease is added', ['10.77.0.2', '10.77.0.42'], (await inn(i.reply(DHCP.ACK, SERVER, '10.77.0.42', { lease: 60, dstMac: MAC[2] })), r.liveLeases()));
  await sleep(4500);
  c.check(S, 'the 4 s lease expired in the kernel (checked by the program), the 60 s one lives', ['10.77.0.42'], r.liveLeases());
  c.check(S, 'after expiry: out from .2 drops', false, await out(o.udp('10.77.0.2')));
  c.check(S, 'out from .42 passes', true, await out(o.udp('10.77.0.42')));
  c.check(S, 'out DHCPRELEASE (ciaddr .42) passes', true, await out(o.release('10.77.0.42')));
  c.check(S, 'RELEASE frees the lease: no live lease', [], r.liveLeases());
  c.check(S, 'back to DHCP-only: out from .42 drops', false, await out(o.udp('10.77.0.42')));
}

async function main(): Promise<void> {
  if (!isRootOrSay('network namespaces, BPF')) return;
  const { only, trials } = scriptArgs();
  const c = new Checks();
  const tb = await createTestbed({ prefix: 'lrnbpf', vms: [{ name: 'vm0', tap: 'vnet0', mac: MAC[0] }, { name: 'vm2', tap: 'vnet2', mac: MAC[2] }], peers: [{ name: 'peer', mac: PEER_MAC }] });
  const r = new Rig(tb, c);
  try {
    await makeHub(tb, ['vnet0', 'vnet2', tb.guest('peer').port]);
    await r.attachReplace(false);
    c.check('bpf', 'the verifier accepts both programs (bounded option walk, compare-and-swap)', true, true);
    const run = (name: string, f: () => Promise<void> | void): Promise<void> => runScenario(c, only, name, f);
    await run('parser', () => scenarioParser(r));
    await run('any', () => scenarioAny(r));
    await run('race', () => scenarioRace(r, trials));
    await run('dhcp', () => scenarioDhcp(r));
  } finally {
    r.obj?.close();
    await settlePacketSockets();
    await tb.destroy();
  }
  c.finish();
}

await main();
