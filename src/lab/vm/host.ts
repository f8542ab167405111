// Namespace hosts that run real QEMU guests under their own private libvirtd,
// joined into one lab:
//
//   <id>-host (switch)  bridge br0: the shared L2 segment, with the peer on
//                       vpeer0 and one uplink per host (up0, up1, ...);
//                       bridge ctl: the hosts' control network (ctl0, ...)
//   <idN>-host          one per VM host: bridge br0 (the guests' taps,
//                       created by libvirt, and `uplink` to the switch),
//                       `ctl0` with 10.254.0.N+1/24 (libvirtd listens there
//                       for qemu+tcp with auth none, and QEMU for migration
//                       streams), a private libvirtd (src/lab/libvirt.ts)
//                       with its own hostname (UTS namespace), host UUID,
//                       qemu.conf for QEMU in a namespace, and hook scripts
//   <id>-peer           the peer: eth0 on the switch's br0
//
// So a guest's frames reach the peer through the same switch before and
// after a live migration from one host to another. Every host records each
// qemu hook call (recordingHook) unless told not to; tests add their own
// hooks (e.g. nwf-fast's libvirt hook) by name.
//
// QEMU's capabilities, which libvirtd probes (about 4 s under TCG here) at
// the first use of the emulator, are kept in the nwf-fast cache directory and
// seeded into each new daemon's private cache: libvirtd re-probes by itself
// when QEMU, libvirt or the kernel changed. Each daemon is warmed up
// (domcapabilities) before the lab is handed out, so guest starts and
// migrations are timed without the probe.
//
// Teardown (VmLab.destroy, also after a failed create) is by PID and by
// namespace: each libvirtd ends with every process left in its mount
// namespace (the QEMU guests), then the namespaces are deleted.
import { execa, type ResultPromise } from 'execa';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import { join } from 'node:path';
import { defaultCacheDir } from '../../host/bpf-build.js';
import { Libvirtd } from '../libvirt.js';
import { hostRunner } from '../../host/netns.js';
import { createTestbed, type Testbed, type TestbedGuest } from '../testbed.js';
import { CODES, NwfError } from '../../util/errors.js';
import { readHookCalls, recordingHook, type HookCall } from './hooks.js';

/** Where the recording hook writes, in the daemon's view. */
export const HOOK_LOG = '/var/log/libvirt/nwf-hooks.jsonl';
const CONTROL_NET = '10.254.0';
const LIBVIRT_PORT = 16509;
const QEMU_CAPS_DIR = '/var/cache/libvirt/qemu/capabilities';

export interface VmHostSpec {
  /** Short name ([a-z0-9]{1,8}): the hostname is `<prefix>-<name>`. */
  name: string;
  /** Hook scripts (name -> script text, see hooks.ts), installed before the daemon starts. */
  hooks?: Readonly<Record<string, string>>;
  /** Record every hook call to hookLog (script `00-nwf-record`, runs first). Default true. */
  recordHooks?: boolean;
}

export interface VmLabSpec {
  /** Namespace prefix, [a-z][a-z0-9]{0,11}. */
  prefix: string;
  hosts: readonly VmHostSpec[];
  /** The peer on the shared segment. */
  peer: { mac: string; ipv4: string };
  /** Bound on each libvirtd start. Default 60 s. */
  startTimeoutMs?: number;
  /** Where QEMU capabilities probed by libvirtd are kept between runs; false: not kept. Default <nwf-fast cache>/vm/qemu-capabilities. */
  capsCacheDir?: string | false;
}

/** One namespace host with its running libvirtd. */
export class VmHost {
  constructor(
    readonly name: string,
    readonly testbed: Testbed,
    readonly libvirtd: Libvirtd,
    readonly hostname: string,
    readonly hostUuid: string,
    /** Its address on the control network. */
    readonly address: string,
    /** The recording hook's file on the machine, when recording. */
    readonly hookLog: string | undefined,
  ) {}

  /** How long the warm-up (QEMU capabilities) took after the daemon answered. */
  warmupMs = 0;

  /** The host's network namespace (bridge br0, the guests' taps, libvirt's firewall rules). */
  get netns(): string {
    return this.testbed.hostNs;
  }

  /** The URI other hosts' libvirtds reach this one at. */
  get uri(): string {
    return `qemu+tcp://${this.address}:${LIBVIRT_PORT}/system`;
  }

  /** nsenter arguments that put a command where the daemon and its hooks run (mount, network, UTS namespaces). */
  private inDaemonNs(argv: readonly string[]): string[] {
    return ['-t', String(this.libvirtd.holderPid), '-m', '-n', '-u', '--', ...argv];
  }

  /** Runs argv where the daemon runs (its virsh, its /run/libvirt, its network namespace); bounded (default 60 s). */
  async exec(argv: readonly string[], opts: { input?: string; env?: Record<string, string>; timeoutMs?: number; check?: boolean } = {}): Promise<{ exitCode: number; stdout: string; stderr: string }> {
    const r = await execa('nsenter', this.inDaemonNs(argv), { input: opts.input, env: opts.env, reject: false, timeout: opts.timeoutMs ?? 60_000 });
    const res = { exitCode: r.exitCode ?? 1, stdout: String(r.stdout ?? ''), stderr: String(r.stderr ?? '') };
    if ((opts.check ?? true) && (res.exitCode !== 0 || r.failed)) throw new NwfError(CODES.COMMAND_FAILED, `${argv.join(' ')} on host ${this.name} failed (exit ${res.exitCode}${r.timedOut ? ', timed out' : ''}): ${res.stderr.trim()}`);
    return res;
  }

  /**
   * Starts a long-running process where the daemon runs (e.g. a reconciler
   * following libvirt's events). It ends with the host at the latest: every
   * process in the daemon's mount namespace is ended when the daemon stops.
   */
  spawn(argv: readonly string[], opts: { env?: Record<string, string> } = {}): ResultPromise {
    return execa('nsenter', this.inDaemonNs(argv), { env: opts.env, reject: false, cleanup: true, buffer: true, stdin: 'ignore' });
  }

  /** Hook calls recorded so far. */
  hookCalls(): HookCall[] {
    return this.hookLog ? readHookCalls(this.hookLog) : [];
  }

  /** Names of the running domains. */
  async domains(): Promise<string[]> {
    const r = await this.libvirtd.virsh(['list', '--name']);
    return r.stdout
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean);
  }

  /** Restarts libvirtd with its guests running (they are reconnected); returns the milliseconds until it answered. */
  async restartLibvirtd(): Promise<number> {
    return this.libvirtd.restart();
  }

  /** `ebtables-save` in the host's namespace. */
  async ebtablesSave(): Promise<string> {
    return this.libvirtd.ebtablesSave();
  }

  /** Destroys every domain (bounded), then stops the daemon (which ends what is left of its guests by PID). */
  async stop(): Promise<void> {
    if (this.libvirtd.running()) {
      const names = await this.domains().catch(() => [] as string[]);
      for (const n of names) await this.libvirtd.virsh(['destroy', n], { check: false, timeoutMs: 15_000 }).catch(() => undefined);
    }
    await this.libvirtd.stop();
  }
}

export interface VmLab {
  hosts: VmHost[];
  host(name: string): VmHost;
  /** The switch namespace (shared br0, control bridge ctl). */
  switchNs: string;
  peer: TestbedGuest;
  /** Every namespace of the lab. */
  namespaces: string[];
  /** Stops every host (guests, daemons) and deletes every namespace. Idempotent; never throws. */
  destroy(): Promise<void>;
}

const HOST_NAME_RE = /^[a-z0-9]{1,8}$/;

/** Builds the switch, the hosts and their links, then starts every host's libvirtd (in parallel). On failure, removes what it made. */
export async function createVmLab(spec: VmLabSpec): Promise<VmLab> {
  if (spec.hosts.length < 1 || spec.hosts.length > 8) throw new NwfError(CODES.VALUE_INVALID, `vm lab: ${spec.hosts.length} hosts`, { expected: '1..8' });
  for (const h of spec.hosts) if (!HOST_NAME_RE.test(h.name)) throw new NwfError(CODES.VALUE_INVALID, `vm lab: invalid host name ${JSON.stringify(h.name)}`, { expected: '[a-z0-9]{1,8}' });
  if (new Set(spec.hosts.map((h) => h.name)).size !== spec.hosts.length) throw new NwfError(CODES.VALUE_INVALID, 'vm lab: duplicate host names');
  const runner = hostRunner();
  const testbeds: Testbed[] = [];
  const hosts: VmHost[] = [];
  let destroyed = false;
  const destroy = async (): Promise<void> => {
    if (destroyed) return;
    destroyed = true;
    await Promise.all(hosts.map((h) => h.stop().catch(() => undefined)));
    for (const tb of testbeds.reverse()) await tb.destroy().catch(() => undefined);
  };
  try {
    const sw = await createTestbed({ prefix: spec.prefix, vms: [], peers: [{ name: 'peer', mac: spec.peer.mac, ipv4: [spec.peer.ipv4] }] });
    testbeds.push(sw);
    await runner.run(['ip', '-n', sw.hostNs, '-batch', '-'], { input: ['link add ctl type bridge stp_state 0', 'link set ctl addrgenmode none', 'link set ctl up', ''].join('\n') });
    const boxes: { spec: VmHostSpec; tb: Testbed; address: string }[] = [];
    for (const [i, h] of spec.hosts.entries()) {
      const tb = await createTestbed({ prefix: spec.prefix, vms: [], peers: [] });
      testbeds.push(tb);
      const address = `${CONTROL_NET}.${i + 1}`;
      await runner.run(['ip', '-n', sw.hostNs, '-batch', '-'], {
        input: [
          `link add up${i} type veth peer name uplink netns ${tb.hostNs}`,
          `link set up${i} master br0`,
          `link set up${i} up`,
          `link add c${i} type veth peer name ctl0 netns ${tb.hostNs}`,
          `link set c${i} master ctl`,
          `link set c${i} up`,
          '',
        ].join('\n'),
      });
      await runner.run(['ip', '-n', tb.hostNs, '-batch', '-'], {
        input: ['link set uplink master br0', 'link set uplink up', `addr add ${address}/24 dev ctl0`, 'link set ctl0 up', ''].join('\n'),
      });
      boxes.push({ spec: h, tb, address });
    }
    const capsDir = spec.capsCacheDir === undefined ? join(defaultCacheDir(), 'vm', 'qemu-capabilities') : spec.capsCacheDir;
    const seeds = capsDir ? listXml(capsDir).map((f) => ({ from: join(capsDir, f), to: `${QEMU_CAPS_DIR}/${f}` })) : [];
    const started = await Promise.allSettled(
      boxes.map(async (b) => {
        const hostname = `${spec.prefix}-${b.spec.name}`;
        const hostUuid = randomUUID();
        const record = b.spec.recordHooks ?? true;
        const lv = await Libvirtd.start({
          seedFiles: seeds,
          netns: b.tb.hostNs,
          qemu: true,
          hostname,
          hostUuid,
          listenTcp: { address: b.address, port: LIBVIRT_PORT },
          qemuHooks: { ...(record ? { '00-nwf-record': recordingHook(HOOK_LOG) } : {}), ...(b.spec.hooks ?? {}) },
          startTimeoutMs: spec.startTimeoutMs ?? 60_000,
          holderLifetimeS: 3600,
        });
        const host = new VmHost(b.spec.name, b.tb, lv, hostname, hostUuid, b.address, record ? lv.hostPath(HOOK_LOG) : undefined);
        hosts.push(host); // stopped by destroy() from here on, whatever happens next
        host.warmupMs = (await lv.virsh(['domcapabilities', '--virttype', 'qemu', '--arch', 'x86_64'], { timeoutMs: 120_000 })).ms;
        if (capsDir) saveCaps(lv.hostPath(QEMU_CAPS_DIR), capsDir);
        return host;
      }),
    );
    const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    const ordered = boxes.map((b) => hosts.find((h) => h.testbed === b.tb) as VmHost);
    return {
      hosts: ordered,
      host(name: string): VmHost {
        const h = ordered.find((x) => x.name === name);
        if (!h) throw new NwfError(CODES.VALUE_INVALID, `vm lab has no host ${name}`);
        return h;
      },
      switchNs: sw.hostNs,
      peer: sw.guest('peer'),
      namespaces: testbeds.flatMap((t) => t.namespaces),
      destroy,
    };
  } catch (e) {
    await destroy();
    throw e;
  }
}

function listXml(dir: string): string[] {
  try {
    return fs.readdirSync(dir).filter((f) => /^[0-9a-f]+\.xml$/.test(f));
  } catch {
    return [];
  }
}

/** Copies libvirt's capability files into the cache (atomically: write, then rename). */
function saveCaps(from: string, to: string): void {
  try {
    fs.mkdirSync(to, { recursive: true });
    for (const f of listXml(from)) {
      const tmp = join(to, `.${f}.${process.pid}.tmp`);
      fs.copyFileSync(join(from, f), tmp);
      fs.renameSync(tmp, join(to, f));
    }
  } catch {
    /* a cache only */
  }
}

/** The text of a file on the machine, or '' when it does not exist (yet). */
export function readText(path: string): string {
  try {
    return fs.readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}
