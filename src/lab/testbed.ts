// A "KVM host" built from network namespaces, for kernel tests.
//
//   <id>-host      Linux bridge br0 (no STP, no VLAN filtering (the default),
//                  no multicast snooping); one port per guest, named like a libvirt tap
//                  (vnet0, ...) or a peer port (vpeer0, ...).
//   <id>-<guest>   one namespace per VM or peer, holding the far end of the
//                  veth, named eth0, with the guest's MAC and addresses.
//
// <id> is `<prefix>-<pid>-<random>`, so parallel runs never collide and
// destroyStale() can tell leftovers of dead processes from live testbeds.
// Nothing here touches the root namespace: every command is `ip -n NS ...` /
// `ip netns exec NS ...`, and sysctls are written with the thread switched
// into the namespace. br_netfilter is left at its default
// (net.bridge.bridge-nf-call-iptables=1 in a new namespace).
import fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import { CODES, NwfError } from '../util/errors.js';
import type { CommandRunner, RunOptions, RunResult } from '../host/runner.js';
import { hostRunner, ifIndex, netnsList, withNetns } from '../host/netns.js';
import type { Endpoint } from './packet-io.js';

export interface TestbedGuestSpec {
  /** Short name, [a-z0-9]{1,12}; also the namespace suffix. */
  name: string;
  /** MAC of the guest's eth0, e.g. 52:54:00:00:00:01. */
  mac: string;
  /** Addresses with prefix length, e.g. 10.0.0.1/24. */
  ipv4?: string[];
  /** Addresses with prefix length, e.g. fd00::1/64 (added with nodad). */
  ipv6?: string[];
}

export interface TestbedVmSpec extends TestbedGuestSpec {
  /** Name of the bridge port in the host namespace, like libvirt's tap: vnet0. */
  tap: string;
}

export interface TestbedPeerSpec extends TestbedGuestSpec {
  /** Name of the bridge port in the host namespace. Default vpeer<N>. */
  port?: string;
}

export interface TestbedSpec {
  /** Short prefix, [a-z][a-z0-9]{0,11}, e.g. "nwft". */
  prefix: string;
  vms: TestbedVmSpec[];
  peers?: TestbedPeerSpec[];
  runner?: CommandRunner;
}

export interface TestbedGuest {
  role: 'vm' | 'peer';
  name: string;
  /** The guest's namespace. */
  ns: string;
  /** Interface inside the guest namespace: always eth0. */
  ifname: string;
  ifindex: number;
  mac: string;
  ipv4: string[];
  ipv6: string[];
  /** The bridge port in the host namespace (the tap name for VMs). */
  port: string;
  portIfindex: number;
  portMac: string;
  /** { ns, ifname } of the guest side, for PacketSocket.open / deliver. */
  endpoint: Endpoint;
  /** { ns, ifname } of the host side (bridge port). */
  portEndpoint: Endpoint;
}

export interface Testbed {
  /** `<prefix>-<pid>-<random>`: every namespace name starts with it. */
  id: string;
  hostNs: string;
  bridge: string;
  bridgeIfindex: number;
  vms: TestbedGuest[];
  peers: TestbedGuest[];
  /** Every namespace this testbed created. */
  namespaces: string[];
  /** net.bridge.bridge-nf-call-iptables in the host namespace (br_netfilter default). */
  brNfCallIptables: boolean;
  /** A VM or peer by name; throws when unknown. */
  guest(name: string): TestbedGuest;
  /** Runs argv inside one of this testbed's namespaces (`ip netns exec NS ...`). */
  exec(ns: string, argv: readonly string[], opts?: RunOptions): Promise<RunResult>;
  /** Deletes every namespace it created. Idempotent. */
  destroy(): Promise<void>;
}

const NAME_RE = /^[a-z0-9]{1,12}$/;
const PREFIX_RE = /^[a-z][a-z0-9]{0,11}$/;
const IFNAME_RE = /^[A-Za-z0-9_.-]{1,15}$/;
const MAC_RE = /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/;

function invalid(what: string, value: string, expected: string): NwfError {
  return new NwfError(CODES.VALUE_INVALID, `testbed: invalid ${what} ${JSON.stringify(value)}`, { expected });
}

/** Writes net sysctls of namespace ns in-process (the thread is switched into it). */
function writeSysctls(ns: string, values: Record<string, string | number>): void {
  withNetns(ns, () => {
    for (const [key, value] of Object.entries(values)) {
      fs.writeFileSync(`/proc/sys/${key.replaceAll('.', '/')}`, `${value}\n`);
    }
  });
}

function readSysctl(ns: string, key: string): string | undefined {
  return withNetns(ns, () => {
    try {
      return fs.readFileSync(`/proc/sys/${key.replaceAll('.', '/')}`, 'utf8').trim();
    } catch {
      return undefined;
    }
  });
}

function portMacFor(mac: string): string {
  // libvirt gives the host side of a tap the guest MAC with fe as first byte.
  return `fe${mac.slice(2)}`;
}

function guestSysctls(hasIpv6: boolean): Record<string, number> {
  return {
    'net.ipv6.conf.all.accept_dad': 0,
    'net.ipv6.conf.default.accept_dad': 0,
    'net.ipv6.conf.all.accept_ra': 0,
    'net.ipv6.conf.default.accept_ra': 0,
    'net.ipv6.conf.default.router_solicitations': 0,
    // none (1): no link-local address, hence no MLD/NDP noise on links that
    // do not need IPv6; eui64 (0) where the guest has IPv6 addresses.
    'net.ipv6.conf.default.addr_gen_mode': hasIpv6 ? 0 : 1,
  };
}

/** Builds the namespaces, bridge and veths. On failure, removes what it created. */
export async function createTestbed(spec: TestbedSpec): Promise<Testbed> {
  const runner = spec.runner ?? hostRunner();
  if (!PREFIX_RE.test(spec.prefix)) throw invalid('prefix', spec.prefix, '[a-z][a-z0-9]{0,11}');
  const id = `${spec.prefix}-${process.pid}-${randomBytes(3).toString('hex').slice(0, 4)}`;
  const hostNs = `${id}-host`;
  const bridge = 'br0';

  type Plan = { role: 'vm' | 'peer'; spec: TestbedGuestSpec; port: string };
  const plans: Plan[] = [
    ...spec.vms.map((v): Plan => ({ role: 'vm', spec: v, port: v.tap })),
    ...(spec.peers ?? []).map((p, i): Plan => ({ role: 'peer', spec: p, port: p.port ?? `vpeer${i}` })),
  ];
  const seen = new Set<string>(['host']);
  const ports = new Set<string>([bridge]);
  for (const p of plans) {
    if (!NAME_RE.test(p.spec.name)) throw invalid('guest name', p.spec.name, '[a-z0-9]{1,12}');
    if (seen.has(p.spec.name)) throw invalid('duplicate guest name', p.spec.name, 'unique names other than "host"');
    seen.add(p.spec.name);
    if (!IFNAME_RE.test(p.port) || ports.has(p.port)) throw invalid('port name', p.port, 'a unique interface name of at most 15 characters');
    ports.add(p.port);
    const mac = p.spec.mac.toLowerCase();
    if (!MAC_RE.test(mac)) throw invalid('MAC', p.spec.mac, 'a MAC address like 52:54:00:00:00:01');
    if ((parseInt(mac.slice(0, 2), 16) & 1) !== 0) throw invalid('MAC (multicast bit set)', p.spec.mac, 'a unicast MAC');
  }

  const created: string[] = [];
  const destroy = async (): Promise<void> => {
    const present = new Set(await netnsList(runner));
    for (const ns of [...created].reverse()) {
      if (present.has(ns)) await runner.run(['ip', 'netns', 'del', ns], { check: false });
    }
  };

  try {
    const nsOf = (name: string): string => `${id}-${name}`;
    for (const ns of [hostNs, ...plans.map((p) => nsOf(p.spec.name))]) {
      await runner.run(['ip', 'netns', 'add', ns]);
      created.push(ns);
    }

    // Quiet IPv6 before any link exists, so the defaults apply to new links.
    writeSysctls(hostNs, guestSysctls(false));
    for (const p of plans) writeSysctls(nsOf(p.spec.name), guestSysctls((p.spec.ipv6?.length ?? 0) > 0));

    const hostLines = [
      `link set lo up`,
      // vlan_filtering is 0 by default; this kernel is built without
      // CONFIG_BRIDGE_VLAN_FILTERING and refuses the option even as 0.
      `link add ${bridge} type bridge stp_state 0 mcast_snooping 0`,
      `link set ${bridge} addrgenmode none`,
      `link set ${bridge} up`,
    ];
    for (const p of plans) {
      const mac = p.spec.mac.toLowerCase();
      hostLines.push(
        `link add ${p.port} address ${portMacFor(mac)} type veth peer name eth0 address ${mac} netns ${nsOf(p.spec.name)}`,
        `link set ${p.port} master ${bridge}`,
        `link set ${p.port} up`,
      );
    }
    await runner.run(['ip', '-n', hostNs, '-batch', '-'], { input: hostLines.join('\n') + '\n' });

    for (const p of plans) {
      const hasV6 = (p.spec.ipv6?.length ?? 0) > 0;
      const lines = [`link set lo up`, `link set eth0 addrgenmode ${hasV6 ? 'eui64' : 'none'}`];
      for (const a of p.spec.ipv4 ?? []) lines.push(`addr add ${a} dev eth0`);
      for (const a of p.spec.ipv6 ?? []) lines.push(`addr add ${a} dev eth0 nodad`);
      lines.push(`link set eth0 up`);
      await runner.run(['ip', '-n', nsOf(p.spec.name), '-batch', '-'], { input: lines.join('\n') + '\n' });
    }

    const guests: TestbedGuest[] = plans.map((p) => {
      const ns = nsOf(p.spec.name);
      const mac = p.spec.mac.toLowerCase();
      return {
        role: p.role,
        name: p.spec.name,
        ns,
        ifname: 'eth0',
        ifindex: withNetns(ns, () => ifIndex('eth0')),
        mac,
        ipv4: [...(p.spec.ipv4 ?? [])],
        ipv6: [...(p.spec.ipv6 ?? [])],
        port: p.port,
        portIfindex: withNetns(hostNs, () => ifIndex(p.port)),
        portMac: portMacFor(mac),
        endpoint: { ns, ifname: 'eth0' },
        portEndpoint: { ns: hostNs, ifname: p.port },
      };
    });
    const bridgeIfindex = withNetns(hostNs, () => ifIndex(bridge));
    const brNf = readSysctl(hostNs, 'net.bridge.bridge-nf-call-iptables');
    const namespaces = [...created];

    return {
      id,
      hostNs,
      bridge,
      bridgeIfindex,
      vms: guests.filter((g) => g.role === 'vm'),
      peers: guests.filter((g) => g.role === 'peer'),
      namespaces,
      brNfCallIptables: brNf === '1',
      guest(name: string): TestbedGuest {
        const g = guests.find((x) => x.name === name);
        if (!g) throw new NwfError(CODES.VALUE_INVALID, `testbed ${id} has no guest ${name}`);
        return g;
      },
      async exec(ns: string, argv: readonly string[], opts?: RunOptions): Promise<RunResult> {
        if (!namespaces.includes(ns)) {
          throw new NwfError(CODES.VALUE_INVALID, `testbed ${id}: ${ns} is not one of its namespaces`, {
            expected: namespaces.join(', '),
          });
        }
        return runner.run(['ip', 'netns', 'exec', ns, ...argv], opts);
      },
      destroy,
    };
  } catch (e) {
    await destroy().catch(() => undefined);
    throw e;
  }
}

export interface DestroyStaleOptions {
  runner?: CommandRunner;
  /** Also remove testbeds whose creating process is still alive (never this process's). Default false. */
  includeLive?: boolean;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Removes namespaces `<prefix>-<pid>-<rand>-*` left by earlier runs whose
 * process is gone. Returns the names it deleted.
 */
export async function destroyStale(prefix: string, opts: DestroyStaleOptions = {}): Promise<string[]> {
  if (!PREFIX_RE.test(prefix)) throw invalid('prefix', prefix, '[a-z][a-z0-9]{0,11}');
  const runner = opts.runner ?? hostRunner();
  const re = new RegExp(`^${prefix}-(\\d+)-[0-9a-f]+-[a-z0-9]+$`);
  const removed: string[] = [];
  for (const ns of await netnsList(runner)) {
    const m = re.exec(ns);
    if (!m) continue;
    const pid = Number(m[1]);
    if (pid === process.pid) continue;
    if (!opts.includeLive && processAlive(pid)) continue;
    const r = await runner.run(['ip', 'netns', 'del', ns], { check: false });
    if (r.exitCode === 0) removed.push(ns);
  }
  return removed;
}
