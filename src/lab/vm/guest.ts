// A test guest on a namespace host: a transient libvirt domain (virsh create)
// booting the guest image with its scenario, and what a test does with it:
// read its console, hot-plug a NIC, migrate it live to another host, destroy
// it. Every virsh call is bounded (Libvirtd's command timeout or less).
import { randomUUID } from 'node:crypto';
import { CODES, NwfError } from '../../util/errors.js';
import { domainXml, interfaceXml, type InterfaceSpec } from './domain.js';
import type { VmHost } from './host.js';
import { readText } from './host.js';
import type { GuestImage } from './image.js';
import type { GuestScenario, GuestStep } from './scenario.js';

export interface VmNicSpec extends InterfaceSpec {
  /** The guest's address on this NIC, with prefix length. */
  ipv4: string;
  /** Not in the domain at start: added later with attachInterface(). Hot-plugged NICs come after the boot NICs. */
  hotplug?: boolean;
}

export interface VmGuestSpec {
  name: string;
  uuid?: string;
  /** 0..4095: frames from NIC i carry tagOf(tag, i). */
  tag: number;
  nics: readonly VmNicSpec[];
  peer: GuestScenario['peer'];
  spoof?: GuestScenario['spoof'];
  steps: readonly GuestStep[];
  /** The guest powers itself off after this long. Default 300 s. */
  lifetimeS?: number;
  memoryMiB?: number;
  metadata?: string;
}

/** Where a guest's serial console goes, in the daemon's view. */
export function consolePathOf(name: string): string {
  return `/var/log/libvirt/qemu/${name}-console.log`;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class VmGuest {
  /** Console text of the hosts the guest left (by host name). */
  private readonly pastConsoles: { host: string; text: string }[] = [];

  private constructor(
    readonly spec: VmGuestSpec,
    readonly uuid: string,
    private current: VmHost,
    /** Epoch ms when `virsh create` was called and when it returned. */
    readonly createdAt: number,
    readonly createMs: number,
  ) {}

  get name(): string {
    return this.spec.name;
  }

  /** The host the guest runs on now. */
  get host(): VmHost {
    return this.current;
  }

  /** Starts the guest on `host` (virsh create: a transient domain); resolves once QEMU runs. */
  static async start(host: VmHost, spec: VmGuestSpec, image: GuestImage): Promise<VmGuest> {
    let hotplugSeen = false;
    for (const n of spec.nics) {
      if (n.hotplug) hotplugSeen = true;
      else if (hotplugSeen) throw new NwfError(CODES.VALUE_INVALID, `vm ${spec.name}: boot NIC ${n.mac} after a hot-plugged one`, { expected: 'boot NICs first' });
    }
    const uuid = spec.uuid ?? randomUUID();
    const xml = domainXml(
      {
        name: spec.name,
        uuid,
        interfaces: spec.nics.filter((n) => !n.hotplug),
        scenario: {
          tag: spec.tag,
          nics: spec.nics.map((n) => ({ mac: n.mac, ipv4: n.ipv4 })),
          peer: spec.peer,
          ...(spec.spoof ? { spoof: spec.spoof } : {}),
          steps: spec.steps,
          lifetimeS: spec.lifetimeS ?? 300,
        },
        consolePath: consolePathOf(spec.name),
        ...(spec.memoryMiB !== undefined ? { memoryMiB: spec.memoryMiB } : {}),
        ...(spec.metadata !== undefined ? { metadata: spec.metadata } : {}),
      },
      image,
    );
    const file = host.libvirtd.writeFile(`domain-${spec.name}`, xml);
    const createdAt = Date.now();
    const r = await host.libvirtd.virsh(['create', file], { timeoutMs: 60_000 });
    return new VmGuest(spec, uuid, host, createdAt, r.ms);
  }

  /** The console output on the current host so far. */
  console(): string {
    return readText(this.current.libvirtd.hostPath(consolePathOf(this.name)));
  }

  /** Console output on every host the guest ran on, oldest first (for diagnostics). */
  consoles(): { host: string; text: string }[] {
    return [...this.pastConsoles, { host: this.current.name, text: this.console() }];
  }

  /** Waits (bounded) for a console line matching `re` on the current host; returns the match. */
  async waitConsole(re: RegExp, timeoutMs: number): Promise<RegExpMatchArray> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const m = this.console().match(re);
      if (m) return m;
      if (performance.now() >= deadline) {
        throw new NwfError(CODES.COMMAND_FAILED, `vm ${this.name} on ${this.current.name}: no console line matching ${re} after ${timeoutMs} ms; console:\n${this.console().slice(-3000)}`);
      }
      await sleep(100);
    }
  }

  /** `virsh domstate` on the current host ('running', 'shut off', ... or '' when the domain is not there). */
  async state(): Promise<string> {
    const r = await this.current.libvirtd.virsh(['domstate', this.name], { check: false, timeoutMs: 15_000 });
    return r.exitCode === 0 ? r.stdout.trim() : '';
  }

  /** The QEMU process of the guest on the current host (from libvirt's pid file), if any. */
  qemuPid(): number | undefined {
    const t = readText(this.current.libvirtd.hostPath(`/run/libvirt/qemu/${this.name}.pid`)).trim();
    return /^\d+$/.test(t) ? Number(t) : undefined;
  }

  /** The guest's taps on the current host, by MAC (virsh domiflist). */
  async taps(): Promise<Map<string, string>> {
    const r = await this.current.libvirtd.virsh(['domiflist', this.name], { timeoutMs: 15_000 });
    const out = new Map<string, string>();
    for (const line of r.stdout.split('\n')) {
      const p = line.trim().split(/\s+/);
      const mac = p.at(-1) ?? '';
      if (p.length >= 5 && /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/.test(mac)) out.set(mac, p[0] as string);
    }
    return out;
  }

  /** The live domain XML on the current host. */
  async dumpXml(): Promise<string> {
    return (await this.current.libvirtd.virsh(['dumpxml', this.name], { timeoutMs: 15_000 })).stdout;
  }

  /** Hot-plugs NIC `mac` of the spec (virsh attach-device --live); returns the milliseconds virsh took. */
  async attachInterface(mac: string): Promise<number> {
    const nic = this.spec.nics.find((n) => n.mac === mac);
    if (!nic?.hotplug) throw new NwfError(CODES.VALUE_INVALID, `vm ${this.name}: ${mac} is not a hot-plug NIC of its spec`);
    const file = this.current.libvirtd.writeFile(`iface-${this.name}`, `${interfaceXml(nic)}\n`);
    return (await this.current.libvirtd.virsh(['attach-device', this.name, file, '--live'], { timeoutMs: 60_000 })).ms;
  }

  /**
   * Live migration to `to` (virsh migrate --live --p2p from the current
   * host's daemon to `to`'s over the control network, the memory stream over
   * it too); returns the milliseconds virsh took. Afterwards the guest's host
   * is `to`.
   */
  async migrate(to: VmHost, opts: { timeoutMs?: number } = {}): Promise<number> {
    if (to === this.current) throw new NwfError(CODES.VALUE_INVALID, `vm ${this.name}: already on ${to.name}`);
    const from = this.current;
    const r = await from.libvirtd.virsh(['migrate', '--live', '--p2p', this.name, to.uri, '--migrateuri', `tcp://${to.address}`], { timeoutMs: opts.timeoutMs ?? 120_000 });
    this.pastConsoles.push({ host: from.name, text: this.console() });
    this.current = to;
    return r.ms;
  }

  /** virsh destroy on the current host (bounded; no error when it is already gone). */
  async destroy(): Promise<void> {
    await this.current.libvirtd.virsh(['destroy', this.name], { check: false, timeoutMs: 30_000 });
  }
}
