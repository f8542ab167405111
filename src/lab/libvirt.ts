// Real libvirt as a reference: a private libvirtd inside one network
// namespace, for conformance tests and baselines (never for production use).
//
// libvirtd's privileged paths are compiled in (/etc/libvirt, /run/libvirt,
// /var/lib/libvirt, /var/log/libvirt, /var/cache/libvirt) and its nwfilter
// driver only runs in the privileged daemon (qemu:///system). To never touch
// a system libvirtd, the daemon runs in a private mount namespace where each
// of those directories is a bind mount of a fresh work directory:
//
//   holder   `ip netns exec NS unshare --mount --propagation private -- sleep N`:
//            owns the mount namespace (and sits in network namespace NS)
//   mounts   `nsenter -t HOLDER -m -- mount --bind WORK/x /etc/libvirt ...`
//   daemon   `nsenter -t HOLDER -m -n -- /usr/sbin/libvirtd -p /run/libvirt/libvirtd.pid`
//            in the foreground, so its PID is known without a pid file
//   virsh    `nsenter -t HOLDER -m -- virsh -c qemu:///system ...`
//
// /etc/libvirt/nwfilter (libvirt's standard filters) is copied into the work
// directory, so `nwfilter-define` never writes to the machine's /etc. The
// daemon gets no D-Bus (DBUS_SYSTEM_BUS_ADDRESS points nowhere and /run/dbus is
// covered): with firewalld reachable, libvirt would hand its ebtables rules
// to firewalld, which would apply them in the machine's root namespace.
// ebtables/iptables rules land in namespace NS only.
//
// One such daemon per network namespace (two in one namespace would fight
// over the same ebtables/iptables chains); daemons in different namespace
// hosts run side by side (see "Several daemons at once" below). A lock file
// per namespace records the owner, the daemon, the holder and its mount
// namespace; a lock left by a dead process (any namespace's) is cleaned up at
// the next start: its daemon, every process left in its mount namespace (QEMU
// guests) and its holder are ended by PID.
//
// Optional, for real QEMU guests (src/lab/vm): a qemu.conf for running QEMU
// inside the namespace host (no virtlogd, no security driver, no cgroups or
// per-guest mount namespaces), the holder's own UTS namespace with a
// hostname, libvirtd.conf host_uuid, a TCP listener with auth none (for
// migration between two namespace hosts), qemu hook scripts installed before
// the daemon starts (libvirt reads its hooks directory only at start), and
// restart() of the daemon alone with its guests running.
//
// Several daemons at once. Everything libvirtd keeps on disk lives under the
// five private directories above, its sockets are path sockets in the private
// /run/libvirt, taps, bridges and firewall rules are per network namespace,
// and the hostname is per UTS namespace. What two daemons still share, and
// why it is safe: /run/xtables.lock (iptables serialises on it: waits, no
// conflict), /dev/net/tun (a device, not a name), the QEMU binary, the guest
// kernel and images (read only), and the host UUID libvirt derives from the
// machine (SMBIOS) unless host_uuid is set (migration between two such
// daemons needs distinct ones: hostUuid). cgroups are off (cgroup_controllers
// is empty in the qemu.conf written here), so equal domain names do not meet
// in /sys/fs/cgroup.
//
// Every command is an argv array run by execa; every wait is bounded.
import { execa, type ResultPromise } from 'execa';
import fs from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { CODES, NwfError } from '../util/errors.js';

export const LIBVIRTD = '/usr/sbin/libvirtd';
export const VIRSH = '/usr/bin/virsh';
export const LIBVIRT_FILTER_DIR = '/etc/libvirt/nwfilter';
export const NWFILTER_DRIVER = '/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_nwfilter.so';
/** The machine-wide lock of earlier versions (one daemon per machine); honoured when given as lockFile. */
export const DEFAULT_LOCK_FILE = '/run/lock/nwf-fast-libvirtd.lock';
const LOCK_DIR = '/run/lock';
const LOCK_PREFIX = 'nwf-fast-libvirtd';

/** The lock file of the private libvirtd of network namespace `netns`. */
export function lockFileFor(netns: string): string {
  return join(LOCK_DIR, `${LOCK_PREFIX}-${netns.replace(/[^A-Za-z0-9_.-]/g, '_')}.lock`);
}
export const LIBVIRT_URI = 'qemu:///system';
const WORK_PREFIX = 'nwf-libvirtd-';

/** Host directories the daemon gets a private copy of (work subdirectory -> mount point). */
const PRIVATE_DIRS: readonly (readonly [string, string])[] = [
  ['etc', '/etc/libvirt'],
  ['run', '/run/libvirt'],
  ['lib', '/var/lib/libvirt'],
  ['log', '/var/log/libvirt'],
  ['cache', '/var/cache/libvirt'],
];

export interface LibvirtAvailability {
  ok: boolean;
  /** Why not, in words (what to install or create). */
  reason?: string;
}

function exists(p: string): boolean {
  try {
    fs.accessSync(p);
    return true;
  } catch {
    return false;
  }
}

function userExists(name: string): boolean {
  try {
    return fs
      .readFileSync('/etc/passwd', 'utf8')
      .split('\n')
      .some((l) => l.startsWith(`${name}:`));
  } catch {
    return false;
  }
}

/** Whether a private libvirtd with the nwfilter driver can run here (root, packages, the user libvirt's QEMU driver wants). */
export function libvirtAvailable(): LibvirtAvailability {
  if (process.getuid?.() !== 0) return { ok: false, reason: 'needs root (libvirtd privileged mode, namespaces)' };
  const missing: string[] = [];
  if (!exists(LIBVIRTD)) missing.push(`${LIBVIRTD} (Debian package libvirt-daemon)`);
  if (!exists(NWFILTER_DRIVER)) missing.push(`${NWFILTER_DRIVER} (Debian package libvirt-daemon)`);
  if (!exists(VIRSH)) missing.push(`${VIRSH} (Debian package libvirt-clients)`);
  if (!exists(join(LIBVIRT_FILTER_DIR, 'clean-traffic.xml'))) missing.push(`${LIBVIRT_FILTER_DIR}/*.xml (Debian package libvirt-daemon-config-nwfilter)`);
  for (const tool of ['/usr/sbin/ebtables', '/usr/sbin/iptables', '/usr/sbin/ip6tables']) if (!exists(tool)) missing.push(tool);
  for (const tool of ['/usr/bin/nsenter', '/usr/bin/unshare']) if (!exists(tool)) missing.push(`${tool} (util-linux)`);
  if (!userExists('libvirt-qemu')) missing.push("user libvirt-qemu (libvirtd's QEMU driver refuses to start without it: groupadd -r kvm; groupadd -r libvirt-qemu; useradd -r -g libvirt-qemu -G kvm libvirt-qemu)");
  if (missing.length) return { ok: false, reason: `libvirt is not usable here, missing: ${missing.join('; ')}` };
  return { ok: true };
}

export interface LibvirtdOptions {
  /** The network namespace (a name under /run/netns) the daemon and its firewall rules live in. */
  netns: string;
  /** Default /run/lock/nwf-fast-libvirtd.lock. */
  lockFile?: string;
  /** Where libvirt's standard filters are copied from. Default /etc/libvirt/nwfilter. */
  filterDir?: string;
  /** Bound on the daemon's start (until `nwfilter-list` answers). Default 30 s. */
  startTimeoutMs?: number;
  /** Bound on each virsh command. Default 60 s. */
  commandTimeoutMs?: number;
  /** The holder process ends by itself after this long, should everything else fail. Default 4 h. */
  holderLifetimeS?: number;
  /** Keep the work directory (logs, binding status) after stop(). Default false. */
  keepWorkDir?: boolean;
  /** When another private libvirtd holds the lock, wait up to this long for it (polling). Default 0: fail at once. */
  lockWaitMs?: number;
  /** Write a qemu.conf that lets the daemon run QEMU guests inside the namespace host. Default false. */
  qemu?: boolean;
  /** Give the daemon its own UTS namespace with this hostname. Default: the machine's. */
  hostname?: string;
  /** libvirtd.conf host_uuid. Default: libvirt's (from the machine, the same for every daemon). */
  hostUuid?: string;
  /** Listen for qemu+tcp://ADDRESS:PORT/system with auth none (inside the namespace only). */
  listenTcp?: { address: string; port?: number };
  /** qemu hook scripts, installed as /etc/libvirt/hooks/qemu.d/NAME (mode 0755) before the daemon starts: name -> script text. */
  qemuHooks?: Readonly<Record<string, string>>;
  /** Files copied into the private directories before the daemon starts (`to` in the daemon's view), e.g. a QEMU capabilities cache. */
  seedFiles?: readonly { from: string; to: string }[];
}

/** The qemu.conf of a namespace host (see the header). */
export const NAMESPACE_QEMU_CONF = [
  '# private libvirtd of nwf-fast tests: QEMU inside a namespace host',
  'stdio_handler = "file"',
  'security_driver = "none"',
  'user = "root"',
  'group = "root"',
  'dynamic_ownership = 0',
  'remember_owner = 0',
  'namespaces = [ ]',
  'cgroup_controllers = [ ]',
  '',
].join('\n');

const HOOK_NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/;

interface LockRecord {
  owner: number;
  holder?: number;
  /** The holder's mount namespace (readlink /proc/PID/ns/mnt): every process in it is ours. */
  mntNs?: string;
  libvirtd?: number;
  workDir?: string;
  started: string;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function exeOf(pid: number): string | undefined {
  try {
    return fs.readlinkSync(`/proc/${pid}/exe`);
  } catch {
    return undefined;
  }
}

function mntNs(pid: number | 'self'): string | undefined {
  try {
    return fs.readlinkSync(`/proc/${pid}/ns/mnt`);
  } catch {
    return undefined;
  }
}

const sleepMs = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `probe` every `everyMs` until it returns a value other than undefined, or `timeoutMs` passes. */
async function waitFor<T>(what: string, timeoutMs: number, everyMs: number, probe: () => T | undefined | Promise<T | undefined>): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (performance.now() >= deadline) throw new NwfError(CODES.COMMAND_FAILED, `libvirtd: timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleepMs(everyMs);
  }
}

/** Ends a process of ours by PID: SIGTERM, then SIGKILL after graceMs. Only if its executable is `exe` (a reused PID is left alone). */
async function endPid(pid: number, exeSuffix: string, graceMs: number): Promise<void> {
  const matches = (): boolean => (exeOf(pid) ?? '').endsWith(exeSuffix);
  if (!alive(pid) || !matches()) return;
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  const deadline = performance.now() + graceMs;
  while (performance.now() < deadline) {
    if (!alive(pid) || !matches()) return;
    await sleepMs(50);
  }
  if (alive(pid) && matches()) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}

function readLock(file: string): LockRecord | undefined {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as LockRecord;
  } catch {
    return undefined;
  }
}

function isOurWorkDir(dir: string | undefined): dir is string {
  return dir !== undefined && dir.startsWith(join(tmpdir(), WORK_PREFIX)) && !dir.includes('..');
}

/** PIDs of the processes in mount namespace `mnt` (other than `except`). */
function pidsInMountNs(mnt: string, except: readonly number[] = []): number[] {
  const out: number[] = [];
  let entries: string[] = [];
  try {
    entries = fs.readdirSync('/proc');
  } catch {
    return out;
  }
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    const pid = Number(e);
    if (pid === process.pid || except.includes(pid)) continue;
    if (mntNs(pid) === mnt) out.push(pid);
  }
  return out;
}

/** Ends (SIGKILL) every process left in mount namespace `mnt` (QEMU guests of a stopped daemon), except `except`; waits for them (bounded). */
async function endMountNsProcesses(mnt: string | undefined, except: readonly number[], waitMs = 5_000): Promise<number[]> {
  if (!mnt || mnt === mntNs('self')) return [];
  const pids = pidsInMountNs(mnt, except);
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  const deadline = performance.now() + waitMs;
  while (pids.some((p) => alive(p) && mntNs(p) === mnt) && performance.now() < deadline) await sleepMs(20);
  return pids;
}

/**
 * Whether pid's mount namespace is the one of work directory `workDir`: its
 * /etc/libvirt is a bind mount of workDir/etc. (A dead owner's recorded
 * namespace id may have been given to another namespace since.)
 */
function mountsWorkDir(pid: number, workDir: string): boolean {
  try {
    const tail = `/${basename(workDir)}/etc`;
    return fs
      .readFileSync(`/proc/${pid}/mountinfo`, 'utf8')
      .split('\n')
      .some((l) => {
        const f = l.split(' ');
        return f[4] === '/etc/libvirt' && (f[3] ?? '').endsWith(tail);
      });
  } catch {
    return false;
  }
}

/** Ends what a dead owner's lock record names: its daemon, the processes left in its mount namespace, its holder; removes its work directory. */
async function cleanUpAfter(rec: LockRecord | undefined): Promise<void> {
  if (rec?.libvirtd) await endPid(rec.libvirtd, '/libvirtd', 10_000);
  const workDir = rec?.workDir;
  if (rec?.mntNs && isOurWorkDir(workDir)) {
    const left = pidsInMountNs(rec.mntNs, rec.holder ? [rec.holder] : []);
    if (left.length && left.every((p) => mountsWorkDir(p, workDir))) await endMountNsProcesses(rec.mntNs, rec.holder ? [rec.holder] : []);
  }
  if (rec?.holder && (!isOurWorkDir(workDir) || mountsWorkDir(rec.holder, workDir))) await endPid(rec.holder, '/sleep', 2_000);
  if (isOurWorkDir(rec?.workDir)) fs.rmSync(rec.workDir, { recursive: true, force: true });
}

/** Cleans up after every private libvirtd whose owner died (locks of any namespace). */
async function sweepStaleLocks(except: string): Promise<void> {
  let names: string[] = [];
  try {
    names = fs.readdirSync(LOCK_DIR).filter((n) => n.startsWith(LOCK_PREFIX) && n.endsWith('.lock'));
  } catch {
    return;
  }
  for (const n of names) {
    const file = join(LOCK_DIR, n);
    if (file === except) continue;
    const rec = readLock(file);
    if (!rec || alive(rec.owner)) continue;
    await cleanUpAfter(rec);
    if (readLock(file)?.owner === rec.owner) fs.rmSync(file, { force: true });
  }
}

/** Takes the lock, taking over (and cleaning up after) a lock whose owner is dead. */
async function acquireLock(file: string, waitMs = 0): Promise<void> {
  fs.mkdirSync(dirname(file), { recursive: true });
  if (dirname(file) === LOCK_DIR) await sweepStaleLocks(file);
  const deadline = performance.now() + waitMs;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fd = fs.openSync(file, 'wx', 0o644);
      fs.writeSync(fd, JSON.stringify({ owner: process.pid, started: new Date().toISOString() } satisfies LockRecord));
      fs.closeSync(fd);
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const rec = readLock(file);
    if (rec && alive(rec.owner) && performance.now() < deadline) {
      await sleepMs(Math.min(1000, Math.max(10, deadline - performance.now())));
      attempt--;
      continue;
    }
    if (rec && alive(rec.owner)) {
      throw new NwfError(CODES.STATE_INVALID, `libvirtd: another private libvirtd is running (lock ${file}, owner pid ${rec.owner}${rec.libvirtd ? `, libvirtd pid ${rec.libvirtd}` : ''}); only one at a time per lock`, {
        hint: `wait for it to end; if its owner is gone, remove ${file}`,
      });
    }
    // Stale: its owner died. End what it left, by PID, then retry.
    await cleanUpAfter(rec);
    try {
      fs.unlinkSync(file);
    } catch {
      /* someone else took it over */
    }
  }
  throw new NwfError(CODES.STATE_INVALID, `libvirtd: could not take the lock ${file}`);
}

function updateLock(file: string, rec: LockRecord): void {
  const cur = readLock(file);
  if (cur?.owner !== process.pid) return;
  fs.writeFileSync(file, JSON.stringify(rec));
}

function releaseLock(file: string): void {
  const cur = readLock(file);
  if (cur?.owner === process.pid) fs.rmSync(file, { force: true });
}

export interface VirshResult {
  stdout: string;
  stderr: string;
  exitCode: number;
  ms: number;
}

export interface BindingSpec {
  /** The tap (bridge port) in the daemon's namespace. */
  portdev: string;
  mac: string;
  filter: string;
  /** Repeated values make a list. */
  params?: Record<string, string | readonly string[]>;
  ownerName?: string;
  ownerUuid?: string;
}

const XML_ESC: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', "'": '&apos;', '"': '&quot;' };
const esc = (s: string): string => s.replace(/[&<>'"]/g, (c) => XML_ESC[c] as string);

/** libvirt `<filterbinding>` XML for a spec. */
export function filterBindingXml(b: BindingSpec): string {
  const params = Object.entries(b.params ?? {})
    .flatMap(([k, v]) => (typeof v === 'string' ? [v] : v).map((x) => `    <parameter name='${esc(k)}' value='${esc(x)}'/>`))
    .join('\n');
  return [
    '<filterbinding>',
    `  <owner><name>${esc(b.ownerName ?? 'vm')}</name><uuid>${esc(b.ownerUuid ?? 'd54df46f-1ab5-4a22-8618-4560ef5fac2c')}</uuid></owner>`,
    `  <portdev name='${esc(b.portdev)}'/>`,
    `  <mac address='${esc(b.mac)}'/>`,
    `  <filterref filter='${esc(b.filter)}'>${params ? `\n${params}\n  ` : ''}</filterref>`,
    '</filterbinding>',
    '',
  ].join('\n');
}

/** A running private libvirtd. Create with Libvirtd.start(); end with stop(). */
export class Libvirtd {
  private stopped = false;
  private exitHook: (() => void) | undefined;
  private fileSeq = 0;
  private daemonPid: number;
  /** Milliseconds of each nwfilter-binding-create, in order. */
  readonly bindingTimes: { portdev: string; filter: string; ms: number }[] = [];

  private constructor(
    readonly netns: string,
    readonly workDir: string,
    readonly holderPid: number,
    /** The holder's mount namespace (every process in it is ours). */
    readonly mountNs: string,
    pid: number,
    private daemon: ResultPromise,
    private readonly holder: ResultPromise,
    private readonly lockFile: string,
    private readonly opts: Required<Pick<LibvirtdOptions, 'commandTimeoutMs' | 'keepWorkDir' | 'startTimeoutMs'>> & { listen: boolean },
    /** How long start() took until the daemon answered. */
    readonly startMs: number,
  ) {
    this.daemonPid = pid;
  }

  /** The daemon's PID (a new one after restart()). */
  get pid(): number {
    return this.daemonPid;
  }

  /** Starts the daemon in `opts.netns` and waits until `virsh nwfilter-list` answers. */
  static async start(opts: LibvirtdOptions): Promise<Libvirtd> {
    const avail = libvirtAvailable();
    if (!avail.ok) throw new NwfError(CODES.STATE_INVALID, `libvirtd: ${avail.reason}`);
    if (!exists(`/run/netns/${opts.netns}`)) throw new NwfError(CODES.VALUE_INVALID, `libvirtd: no network namespace ${opts.netns}`);
    for (const name of Object.keys(opts.qemuHooks ?? {})) {
      if (!HOOK_NAME_RE.test(name)) throw new NwfError(CODES.VALUE_INVALID, `libvirtd: invalid hook script name ${JSON.stringify(name)}`, { expected: '[A-Za-z0-9_.-]{1,64}' });
    }
    const lockFile = opts.lockFile ?? lockFileFor(opts.netns);
    const startTimeoutMs = opts.startTimeoutMs ?? 30_000;
    const commandTimeoutMs = opts.commandTimeoutMs ?? 60_000;
    const t0 = performance.now();
    await acquireLock(lockFile, opts.lockWaitMs ?? 0);
    let workDir: string | undefined;
    let holder: ResultPromise | undefined;
    let daemon: ResultPromise | undefined;
    let mnt: string | undefined;
    try {
      workDir = fs.mkdtempSync(join(tmpdir(), WORK_PREFIX));
      for (const [sub] of PRIVATE_DIRS) fs.mkdirSync(join(workDir, sub), { mode: 0o755 });
      fs.mkdirSync(join(workDir, 'files'));
      const nwf = join(workDir, 'etc', 'nwfilter');
      fs.mkdirSync(nwf);
      const src = opts.filterDir ?? LIBVIRT_FILTER_DIR;
      for (const f of fs.readdirSync(src).filter((n) => n.endsWith('.xml'))) fs.copyFileSync(join(src, f), join(nwf, f));
      writeDaemonConfig(workDir, opts);
      // Mount points must exist on the machine (empty directories, as libvirt's packages make them).
      for (const [, dir] of PRIVATE_DIRS) fs.mkdirSync(dir, { recursive: true });
      updateLock(lockFile, { owner: process.pid, workDir, started: new Date().toISOString() });

      const lifetime = String(opts.holderLifetimeS ?? 4 * 3600);
      const uts = opts.hostname !== undefined ? ['--uts'] : [];
      holder = execa('ip', ['netns', 'exec', opts.netns, 'unshare', '--mount', ...uts, '--propagation', 'private', '--', 'sleep', lifetime], {
        stdio: 'ignore',
        reject: false,
        cleanup: true,
      });
      const holderPid = holder.pid;
      if (holderPid === undefined) throw new NwfError(CODES.COMMAND_FAILED, 'libvirtd: could not start the namespace holder');
      const ownMnt = mntNs('self');
      mnt = await waitFor('the namespace holder', 5_000, 10, () => {
        if (holder?.exitCode !== undefined && holder.exitCode !== null) throw new NwfError(CODES.COMMAND_FAILED, `libvirtd: the namespace holder exited (${holder.exitCode})`);
        const exe = exeOf(holderPid);
        const m = mntNs(holderPid);
        return exe?.endsWith('/sleep') && m !== undefined && m !== ownMnt ? m : undefined;
      });
      updateLock(lockFile, { owner: process.pid, workDir, holder: holderPid, mntNs: mnt, started: new Date().toISOString() });

      const inMnt = (argv: readonly string[], net = false): string[] => ['-t', String(holderPid), '-m', ...(net ? ['-n'] : []), '--', ...argv];
      const mounts: [string, string][] = PRIVATE_DIRS.map(([sub, dir]) => [join(workDir as string, sub), dir]);
      if (exists('/run/dbus')) {
        fs.mkdirSync(join(workDir, 'nodbus'));
        mounts.push([join(workDir, 'nodbus'), '/run/dbus']);
      }
      for (const [from, to] of mounts) {
        await execa('nsenter', inMnt(['mount', '--bind', from, to]), { timeout: 10_000 });
      }
      // The holder's view must now be the private one; the machine's must not.
      if (!exists(`/proc/${holderPid}/root/etc/libvirt/libvirtd.conf`)) throw new NwfError(CODES.COMMAND_FAILED, 'libvirtd: private /etc/libvirt is not visible in the holder');
      if (opts.hostname !== undefined) await execa('nsenter', ['-t', String(holderPid), '-u', '--', 'hostname', opts.hostname], { timeout: 10_000 });

      const listen = opts.listenTcp !== undefined;
      daemon = spawnDaemon(holderPid, listen);
      const pid = daemon.pid as number;
      updateLock(lockFile, { owner: process.pid, workDir, holder: holderPid, mntNs: mnt, libvirtd: pid, started: new Date().toISOString() });
      await waitForDaemon(daemon, holderPid, workDir, startTimeoutMs);
      const lv = new Libvirtd(opts.netns, workDir, holderPid, mnt, pid, daemon, holder, lockFile, { commandTimeoutMs, startTimeoutMs, keepWorkDir: opts.keepWorkDir ?? false, listen }, performance.now() - t0);
      lv.installExitHook();
      return lv;
    } catch (e) {
      // Undo everything, by PID.
      if (daemon?.pid !== undefined) await endPid(daemon.pid, '/libvirtd', 10_000);
      await endMountNsProcesses(mnt, holder?.pid !== undefined ? [holder.pid] : []);
      if (holder?.pid !== undefined) await endPid(holder.pid, '/sleep', 2_000);
      if (workDir && !opts.keepWorkDir) fs.rmSync(workDir, { recursive: true, force: true });
      releaseLock(lockFile);
      throw e;
    }
  }

  /**
   * Ends the daemon alone (SIGTERM, as a service stop does: running QEMU
   * guests keep running) and starts it again in the same namespaces with the
   * same configuration; resolves when it answers again. Returns the
   * milliseconds from the stop until it answered.
   */
  async restart(): Promise<number> {
    if (this.stopped) throw new NwfError(CODES.STATE_INVALID, 'libvirtd: stopped');
    const t0 = performance.now();
    await endPid(this.daemonPid, '/libvirtd', 10_000);
    await Promise.race([this.daemon.then(() => undefined), sleepMs(2_000)]);
    if (alive(this.daemonPid) && (exeOf(this.daemonPid) ?? '').endsWith('/libvirtd')) throw new NwfError(CODES.COMMAND_FAILED, `libvirtd ${this.daemonPid} did not end`);
    this.daemon = spawnDaemon(this.holderPid, this.opts.listen);
    this.daemonPid = this.daemon.pid as number;
    updateLock(this.lockFile, { owner: process.pid, workDir: this.workDir, holder: this.holderPid, mntNs: this.mountNs, libvirtd: this.daemonPid, started: new Date().toISOString() });
    await waitForDaemon(this.daemon, this.holderPid, this.workDir, this.opts.startTimeoutMs);
    return performance.now() - t0;
  }

  /** Where a path of the daemon's private view (/etc/libvirt/..., /run/libvirt/..., /var/lib/libvirt/..., ...) is on the machine. */
  hostPath(privatePath: string): string {
    return workPathOf(this.workDir, privatePath);
  }

  /** Synchronous last resort: if the test process exits without stop(), end the daemon, its guests and the holder by PID, remove the work directory. */
  private installExitHook(): void {
    const hook = (): void => {
      const kill = (pid: number): void => {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      };
      if (alive(this.pid) && (exeOf(this.pid) ?? '').endsWith('/libvirtd')) kill(this.pid);
      for (const pid of pidsInMountNs(this.mountNs, [this.holderPid])) kill(pid);
      if (alive(this.holderPid) && (exeOf(this.holderPid) ?? '').endsWith('/sleep')) kill(this.holderPid);
      if (!this.opts.keepWorkDir) fs.rmSync(this.workDir, { recursive: true, force: true });
      releaseLock(this.lockFile);
    };
    this.exitHook = hook;
    process.once('exit', hook);
  }

  private nsenter(argv: readonly string[], net = false): string[] {
    return ['-t', String(this.holderPid), '-m', ...(net ? ['-n'] : []), '--', ...argv];
  }

  /** Runs `virsh -q -c qemu:///system ARGS` against this daemon. Throws on a non-zero exit unless check is false. */
  async virsh(args: readonly string[], opts: { check?: boolean; timeoutMs?: number } = {}): Promise<VirshResult> {
    if (this.stopped) throw new NwfError(CODES.STATE_INVALID, 'libvirtd: stopped');
    const t0 = performance.now();
    const r = await execa('nsenter', this.nsenter([VIRSH, '-q', '-c', LIBVIRT_URI, ...args]), { reject: false, timeout: opts.timeoutMs ?? this.opts.commandTimeoutMs });
    const res: VirshResult = { stdout: String(r.stdout ?? ''), stderr: String(r.stderr ?? ''), exitCode: r.exitCode ?? 1, ms: performance.now() - t0 };
    if ((opts.check ?? true) && (res.exitCode !== 0 || r.failed)) {
      throw new NwfError(CODES.COMMAND_FAILED, `virsh ${args.join(' ')} failed (exit ${res.exitCode}${r.timedOut ? ', timed out' : ''}): ${res.stderr.trim() || res.stdout.trim()}`);
    }
    return res;
  }

  /** Runs argv inside the daemon's network namespace (e.g. ebtables-save). */
  async execInNetns(argv: readonly string[], opts: { check?: boolean; timeoutMs?: number } = {}): Promise<VirshResult> {
    const t0 = performance.now();
    const r = await execa('ip', ['netns', 'exec', this.netns, ...argv], { reject: false, timeout: opts.timeoutMs ?? 30_000 });
    const res: VirshResult = { stdout: String(r.stdout ?? ''), stderr: String(r.stderr ?? ''), exitCode: r.exitCode ?? 1, ms: performance.now() - t0 };
    if ((opts.check ?? true) && res.exitCode !== 0) throw new NwfError(CODES.COMMAND_FAILED, `${argv.join(' ')} in ${this.netns} failed (exit ${res.exitCode}): ${res.stderr.trim()}`);
    return res;
  }

  /** Writes XML text to a new file in the work directory (visible to the daemon at the same path); returns its path. */
  writeFile(stem: string, text: string): string {
    const f = join(this.workDir, 'files', `${String(++this.fileSeq).padStart(4, '0')}-${stem.replace(/[^A-Za-z0-9_.-]/g, '_')}.xml`);
    fs.writeFileSync(f, text);
    return f;
  }

  /** `virsh nwfilter-define` of filter XML text; returns the filter's name as libvirt reports it. */
  async defineFilter(xml: string): Promise<string> {
    const name = /<filter\b[^>]*\bname\s*=\s*['"]([^'"]+)['"]/.exec(xml)?.[1] ?? 'filter';
    await this.virsh(['nwfilter-define', this.writeFile(`filter-${name}`, xml)]);
    return name;
  }

  async undefineFilter(name: string): Promise<void> {
    await this.virsh(['nwfilter-undefine', name]);
  }

  /** Names of the defined filters. */
  async listFilters(): Promise<string[]> {
    const r = await this.virsh(['nwfilter-list']);
    return r.stdout
      .split('\n')
      .map((l) => l.trim().split(/\s+/))
      .filter((p) => p.length >= 2)
      .map((p) => p[1] as string);
  }

  /** The filter XML as libvirt stored it. */
  async dumpFilter(name: string): Promise<string> {
    return (await this.virsh(['nwfilter-dumpxml', name])).stdout;
  }

  /**
   * `virsh nwfilter-binding-create` (the filter rules are instantiated on
   * the port before it returns); returns how long it took in ms.
   */
  async createBinding(b: BindingSpec | string): Promise<number> {
    const xml = typeof b === 'string' ? b : filterBindingXml(b);
    const port = /<portdev\s+name\s*=\s*['"]([^'"]+)['"]/.exec(xml)?.[1] ?? '?';
    const filter = /<filterref\s+filter\s*=\s*['"]([^'"]+)['"]/.exec(xml)?.[1] ?? '?';
    const r = await this.virsh(['nwfilter-binding-create', this.writeFile(`binding-${port}`, xml)]);
    this.bindingTimes.push({ portdev: port, filter, ms: r.ms });
    return r.ms;
  }

  /** Like createBinding() but returns libvirt's error instead of throwing. */
  async tryCreateBinding(b: BindingSpec | string): Promise<{ ok: true; ms: number } | { ok: false; error: string; ms: number }> {
    const xml = typeof b === 'string' ? b : filterBindingXml(b);
    const port = /<portdev\s+name\s*=\s*['"]([^'"]+)['"]/.exec(xml)?.[1] ?? '?';
    const r = await this.virsh(['nwfilter-binding-create', this.writeFile(`binding-${port}`, xml)], { check: false });
    return r.exitCode === 0 ? { ok: true, ms: r.ms } : { ok: false, error: (r.stderr.trim() || r.stdout.trim()).replace(/^error: /gm, ''), ms: r.ms };
  }

  /** `virsh nwfilter-binding-delete PORTDEV`; returns how long it took in ms. */
  async deleteBinding(portdev: string): Promise<number> {
    return (await this.virsh(['nwfilter-binding-delete', portdev])).ms;
  }

  /** Port devices that have a binding. */
  async listBindings(): Promise<string[]> {
    const r = await this.virsh(['nwfilter-binding-list']);
    return r.stdout
      .split('\n')
      .map((l) => l.trim().split(/\s+/)[0] ?? '')
      .filter((n) => n.length > 0);
  }

  /** Deletes every binding (for reuse between cases). */
  async deleteAllBindings(): Promise<void> {
    for (const p of await this.listBindings()) await this.deleteBinding(p);
  }

  /** `ebtables-save` in the daemon's namespace (libvirt's L2 rules, in the nat table). */
  async ebtablesSave(): Promise<string> {
    return (await this.execInNetns(['ebtables-save'])).stdout;
  }

  /** `ebtables -t TABLE -L` in the daemon's namespace (the nf_tables build prints `policy: RETURN` for user chains that accept). */
  async ebtablesList(table = 'nat'): Promise<string> {
    return (await this.execInNetns(['ebtables', '-t', table, '-L'])).stdout;
  }

  /** `iptables-save` and `ip6tables-save` in the daemon's namespace (libvirt's L3 rules). */
  async iptablesSave(): Promise<{ v4: string; v6: string }> {
    const [v4, v6] = await Promise.all([this.execInNetns(['iptables-save']), this.execInNetns(['ip6tables-save'])]);
    return { v4: v4.stdout, v6: v6.stdout };
  }

  /** The daemon's log so far (errors and warnings). */
  log(): string {
    try {
      return fs.readFileSync(join(this.workDir, 'log', 'libvirtd.log'), 'utf8');
    } catch {
      return '';
    }
  }

  /** Whether the daemon process is still running. */
  running(): boolean {
    return !this.stopped && alive(this.pid) && (exeOf(this.pid) ?? '').endsWith('/libvirtd');
  }

  /**
   * Ends the daemon (SIGTERM, SIGKILL after 10 s), then every process left in
   * its mount namespace (QEMU guests) and the holder, by PID; removes the work
   * directory, releases the lock. Idempotent.
   */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    try {
      await endPid(this.pid, '/libvirtd', 10_000);
      await Promise.race([this.daemon.then(() => undefined), sleepMs(2_000)]);
      await endMountNsProcesses(this.mountNs, [this.holderPid]);
      await endPid(this.holderPid, '/sleep', 2_000);
      await Promise.race([this.holder.then(() => undefined), sleepMs(2_000)]);
      if (!this.opts.keepWorkDir) fs.rmSync(this.workDir, { recursive: true, force: true });
    } finally {
      releaseLock(this.lockFile);
      if (this.exitHook) process.removeListener('exit', this.exitHook);
    }
  }
}

/** Where private path `privatePath` is under work directory `workDir`. */
function workPathOf(workDir: string, privatePath: string): string {
  for (const [sub, dir] of PRIVATE_DIRS) {
    if (privatePath === dir || privatePath.startsWith(`${dir}/`)) {
      const rest = privatePath.slice(dir.length);
      if (rest.split('/').includes('..')) break;
      return join(workDir, sub, rest);
    }
  }
  throw new NwfError(CODES.VALUE_INVALID, `libvirtd: ${privatePath} is not in the daemon's private directories`, { expected: PRIVATE_DIRS.map(([, d]) => d).join(', ') });
}

/** libvirtd.conf (and qemu.conf, hook scripts, seed files) in the work directory, from the options. */
function writeDaemonConfig(workDir: string, opts: LibvirtdOptions): void {
  const conf = ['# private libvirtd of nwf-fast tests', 'log_outputs = "3:file:/var/log/libvirt/libvirtd.log"'];
  if (opts.hostUuid !== undefined) {
    if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(opts.hostUuid)) throw new NwfError(CODES.VALUE_INVALID, `libvirtd: invalid host UUID ${JSON.stringify(opts.hostUuid)}`, { expected: 'a lowercase UUID' });
    conf.push(`host_uuid = "${opts.hostUuid}"`);
  }
  if (opts.listenTcp !== undefined) {
    const { address, port = 16509 } = opts.listenTcp;
    if (!/^[0-9a-fA-F.:]+$/.test(address) || !Number.isInteger(port) || port < 1 || port > 65535) throw new NwfError(CODES.VALUE_INVALID, `libvirtd: invalid listen address ${address} port ${port}`, { expected: 'an IP address and a port' });
    conf.push('listen_tls = 0', 'listen_tcp = 1', `listen_addr = "${address}"`, `tcp_port = "${port}"`, 'auth_tcp = "none"');
  }
  fs.writeFileSync(join(workDir, 'etc', 'libvirtd.conf'), [...conf, ''].join('\n'));
  if (opts.qemu) {
    fs.writeFileSync(join(workDir, 'etc', 'qemu.conf'), NAMESPACE_QEMU_CONF);
    // The package makes /var/log/libvirt/qemu (guest logs, file consoles); libvirtd does not.
    fs.mkdirSync(join(workDir, 'log', 'qemu'), { mode: 0o700 });
  }
  const hooks = Object.entries(opts.qemuHooks ?? {});
  if (hooks.length) {
    const dir = join(workDir, 'etc', 'hooks', 'qemu.d');
    fs.mkdirSync(dir, { recursive: true });
    for (const [name, text] of hooks) fs.writeFileSync(join(dir, name), text, { mode: 0o755 });
  }
  for (const { from, to } of opts.seedFiles ?? []) {
    const dest = workPathOf(workDir, to);
    fs.mkdirSync(dirname(dest), { recursive: true });
    fs.copyFileSync(from, dest);
  }
}

/** Starts libvirtd in the holder's mount namespace and network namespace (and UTS namespace, if it has one), in the foreground. */
function spawnDaemon(holderPid: number, listen: boolean): ResultPromise {
  const argv = [LIBVIRTD, '-f', '/etc/libvirt/libvirtd.conf', '-p', '/run/libvirt/libvirtd.pid', ...(listen ? ['--listen'] : [])];
  const uts = fs.readlinkSync(`/proc/${holderPid}/ns/uts`) !== fs.readlinkSync('/proc/self/ns/uts') ? ['-u'] : [];
  const daemon = execa('nsenter', ['-t', String(holderPid), '-m', '-n', ...uts, '--', ...argv], {
    stdio: ['ignore', 'pipe', 'pipe'],
    reject: false,
    cleanup: true,
    buffer: true,
    env: { DBUS_SYSTEM_BUS_ADDRESS: 'unix:path=/nonexistent/nwf-fast-no-dbus', DBUS_SESSION_BUS_ADDRESS: 'unix:path=/nonexistent/nwf-fast-no-dbus' },
  });
  if (daemon.pid === undefined) throw new NwfError(CODES.COMMAND_FAILED, 'libvirtd: could not start');
  return daemon;
}

/** Waits (bounded) until the daemon answers `virsh nwfilter-list`; throws with its log if it exits first. */
async function waitForDaemon(daemon: ResultPromise, holderPid: number, workDir: string, timeoutMs: number): Promise<void> {
  let exited = false;
  void daemon.then(() => {
    exited = true;
  });
  await waitFor('libvirtd to answer `virsh nwfilter-list`', timeoutMs, 100, async () => {
    if (exited) {
      const r = await daemon;
      throw new NwfError(CODES.COMMAND_FAILED, `libvirtd exited during start (exit ${r.exitCode ?? r.signal}): ${logTail(workDir)}${String(r.stderr ?? '').slice(-2000)}`);
    }
    if (!exists(join(workDir, 'run', 'libvirt-sock'))) return undefined;
    const r = await execa('nsenter', ['-t', String(holderPid), '-m', '--', VIRSH, '-q', '-c', LIBVIRT_URI, 'nwfilter-list'], { reject: false, timeout: 10_000 });
    return r.exitCode === 0 ? true : undefined;
  });
}

function logTail(workDir: string): string {
  try {
    const t = fs.readFileSync(join(workDir, 'log', 'libvirtd.log'), 'utf8');
    return t.slice(-2000);
  } catch {
    return '';
  }
}
