// Where nwf-fast's programs sit on a tap, and how they get there: one
// interface over the three attach mechanisms, for a whole port (both
// directions) at a time.
//
//   tc   a cls_bpf direct-action filter on the clsact qdisc, with nwf-fast's
//        own handle and priority (0x4e57, "NW"); any kernel with clsact. The
//        default (`auto`).
//   tcx  a bpf_link on the interface's tcx ingress/egress (kernel >= 6.6):
//        no qdisc, no classifier walk; first on the hook (BPF_F_BEFORE).
//        Creating or releasing a tcx link waits for an RCU grace period with
//        rtnl held (tcx_entry_sync: the hook's program array is swapped), about
//        13 ms here, one link after another: 1000 taps take 26 s to attach and
//        as long to detach, against 0.15 ms a tc filter. Replacing the program
//        of a link is quick (10 us). So tcx is a choice, not the default.
//   xdp  an XDP bpf_link (0.17 ms to attach), for the frames from the VM only:
//        on a tap, tun runs it on the frame the guest wrote before any skb
//        exists (native XDP), so a dropped frame costs least. The to-VM
//        direction stays on tc.
//
// Links are pinned under <pinDir>/tap-<iface>/{from_vm,to_vm}: a later process
// (the next load, rollback, unload, status) finds them there, replaces their
// program atomically (bpf_link_update: the equivalent of tc's replace in
// place), or detaches them. A pinned link whose interface is gone (the tap
// was deleted, perhaps re-created under the same name) is stale: it is
// unpinned and a new one created. nwf-fast touches only its own links (the
// ones it pinned) and its own tc filters (handle and priority 0x4e57).
//
// Switching a port from one mechanism to another attaches the new one first
// and only then removes the old one, so the port is never without a program:
// XDP runs before tc and tcx, and tcx before the clsact filters (a tcx
// program that accepts ends the tc hook: the old clsact filter is not
// reached), so for a moment a frame may pass the new and the old program,
// never neither.
//
// Links live only as long as something holds them: their pin in bpffs or an
// open fd. A bpffs instance that only this process's mount namespace sees
// (`ip netns exec` mounts a fresh /sys, and nwf-fast then mounts a fresh
// bpffs on it) is gone when the process exits, and the links pinned there
// with it: the taps would lose their programs. So links are used only where
// the pins outlive the process (linksPersist); elsewhere tcx and xdp are
// refused.
import { existsSync, mkdirSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { CODES, NwfError } from '../../util/errors.js';
import { BpfError, EBUSY, EINVAL, EOPNOTSUPP } from './errors.js';
import { bpffsMountedByUs, ensureBpffs } from './bpffs.js';
import { attachTcx, attachXdp, BPF_TCX_EGRESS, BPF_TCX_INGRESS, BpfLinkType, kernelHasTcx, openPinnedLink, type BpfLink } from './link.js';
import type { ProgramLike } from './program.js';
import { tcDetach, tcHookCreate, tcQuery, tcReplace, type TcDirection } from './tc.js';
import { tcRequestError, tcRequestOk, tcRequests, type TcRequest } from './rtnl.js';

/** nwf-fast's tc filter identity on every tap ("NW"). */
export const TC_HANDLE = 0x4e57;
export const TC_PRIORITY = 0x4e57;

/** What the user asks for: `auto` is nwf-fast's default, tc (see above why not tcx). */
export type BpfHookChoice = 'auto' | 'tc' | 'tcx' | 'xdp';
export const BPF_HOOK_CHOICES: readonly BpfHookChoice[] = ['auto', 'tc', 'tcx', 'xdp'];

export type HookMechanism = 'tc' | 'tcx' | 'xdp';

/** The program directions of a port: out = from the VM, in = to the VM. */
export type PortDirection = 'out' | 'in';
export const PORT_DIRECTIONS: readonly PortDirection[] = ['out', 'in'];

/** The mechanism of each direction (XDP only from the VM). */
export interface HookPlan {
  out: HookMechanism;
  in: 'tc' | 'tcx';
}

/** The tc hook each direction's program sits on (the tap's ingress carries the VM's frames). */
const TC_SIDE: Readonly<Record<PortDirection, TcDirection>> = { out: 'ingress', in: 'egress' };
const PIN_NAME: Readonly<Record<PortDirection, string>> = { out: 'from_vm', in: 'to_vm' };

export interface Port {
  iface: string;
  /** The tap's ifindex in the calling thread's network namespace. */
  ifindex: number;
}

/**
 * A port's programs. `out` is the from-VM program for the plan's mechanism
 * (an XDP program for xdp); `outTc`, when given, is the from-VM tc program
 * used if the XDP program cannot be attached to this tap.
 */
export interface PortPrograms {
  out: ProgramLike;
  in: ProgramLike;
  outTc?: ProgramLike;
}

export interface PortAttachment {
  iface: string;
  ifindex: number;
  /** The mechanism each direction ended up on. */
  hooks: HookPlan;
  /** Anything the caller should tell the user (a fallback). */
  notes: string[];
}

const tcSpec = (ifindex: number, d: PortDirection) => ({ ifindex, direction: TC_SIDE[d], handle: TC_HANDLE, priority: TC_PRIORITY });

/** An interface name as a bpffs file name: bpffs refuses names with a dot (kept for its own files). */
const pinName = (iface: string): string => iface.replace(/[%.]/g, (c) => `%${c.charCodeAt(0).toString(16)}`);

export const tapPinDir = (pinDir: string, iface: string): string => join(pinDir, `tap-${pinName(iface)}`);
const linkPin = (pinDir: string, iface: string, d: PortDirection): string => join(tapPinDir(pinDir, iface), PIN_NAME[d]);

// ---- what the kernel and the host can do ------------------------------------------------------

let tcxCache: boolean | undefined;

/** Whether the kernel has tcx (probed once per process with a loaded SCHED_CLS program). */
export function hasTcx(prog: ProgramLike): boolean {
  if (tcxCache === undefined) tcxCache = kernelHasTcx(prog);
  return tcxCache;
}

/**
 * Whether links pinned under `pinDir` (on bpffs, see ensureBpffs) outlive this
 * process: the bpf filesystem there was mounted before nwf-fast ran (by the
 * host's init, or whoever set up the namespace), or nwf-fast mounted it in
 * PID 1's own mount namespace. Not when nwf-fast had to mount a bpffs in a
 * mount namespace of its own (or one it cannot compare: /proc/1 unreadable).
 */
export function linksPersist(): boolean {
  if (!bpffsMountedByUs()) return true;
  try {
    return readlinkSync('/proc/self/ns/mnt') === readlinkSync('/proc/1/ns/mnt');
  } catch {
    return false;
  }
}

/** The mechanisms for `choice` on this kernel and host; throws when an explicit choice cannot be had. */
export function planHooks(choice: BpfHookChoice, can: { tcx: boolean; links: boolean }): HookPlan {
  const refuse = (what: string, why: string, hint: string): never => {
    throw new NwfError(CODES.KERNEL_UNSUPPORTED, `--bpf-hook ${what}: ${why}`, { expected: 'tc (or auto, which is tc)', hint });
  };
  const linkWhy = 'the pin directory is on a bpf filesystem only this process sees (ip netns exec mounts a private /sys), so the links would be released when nwf-fast exits';
  const linkHint = 'run nwf-fast in the namespace with `nsenter --net=/run/netns/NAME` (which keeps the mount namespace), or give --pin-dir on the host\'s /sys/fs/bpf';
  switch (choice) {
    case 'auto':
    case 'tc':
      return { out: 'tc', in: 'tc' };
    case 'tcx':
      if (!can.tcx) refuse('tcx', 'this kernel has no tcx (Linux 6.6 or later)', 'use --bpf-hook tc');
      if (!can.links) refuse('tcx', linkWhy, linkHint);
      return { out: 'tcx', in: 'tcx' };
    case 'xdp':
      if (!can.links) refuse('xdp', linkWhy, linkHint);
      return { out: 'xdp', in: 'tc' };
  }
}

// ---- pinned links -----------------------------------------------------------------------------

function sameAttachment(l: BpfLink, ifindex: number, mech: 'tcx' | 'xdp', d: PortDirection): boolean {
  const info = l.info();
  if (mech === 'xdp') return info.type === BpfLinkType.XDP && info.xdp?.ifindex === ifindex;
  const type = d === 'out' ? BPF_TCX_INGRESS : BPF_TCX_EGRESS;
  return info.type === BpfLinkType.TCX && info.tcx?.ifindex === ifindex && info.tcx.attachType === type;
}

/**
 * The live link pinned for this port and direction (of `mech`, or of either
 * mechanism), or undefined: none, or a stale one (its interface went away or
 * is another one now), which attaches nothing of this port.
 */
function pinnedLink(pinDir: string, port: Port, d: PortDirection, mech?: 'tcx' | 'xdp'): BpfLink | undefined {
  const path = linkPin(pinDir, port.iface, d);
  if (!existsSync(path)) return undefined;
  const l = openPinnedLink(path);
  const live = mech ? sameAttachment(l, port.ifindex, mech, d) : sameAttachment(l, port.ifindex, 'tcx', d) || sameAttachment(l, port.ifindex, 'xdp', d);
  if (live) return l;
  l.close();
  return undefined;
}

/** Detach the link pinned at `path` if it still attaches this port's direction, and unpin it. */
function detachPinned(path: string, port: Port, d: PortDirection): void {
  const l = openPinnedLink(path);
  try {
    if (sameAttachment(l, port.ifindex, 'tcx', d) || sameAttachment(l, port.ifindex, 'xdp', d)) l.detach();
  } finally {
    l.close();
    rmSync(path, { force: true });
  }
}

/** Detach and unpin this direction's link (ours: it is pinned under our directory), if any. */
function dropLink(pinDir: string, port: Port, d: PortDirection): boolean {
  const path = linkPin(pinDir, port.iface, d);
  if (!existsSync(path)) return false;
  detachPinned(path, port, d);
  return true;
}

/** Move a pin (the object stays pinned, under the new name). */
function movePin(from: string, to: string): void {
  rmSync(to, { force: true });
  const l = openPinnedLink(from);
  try {
    l.pin(to);
  } finally {
    l.close();
  }
  rmSync(from, { force: true });
}

/** Put `prog` on this direction with a link of `mech`: update the pinned one in place, or create and pin one. */
function linkDirection(pinDir: string, port: Port, d: PortDirection, mech: 'tcx' | 'xdp', prog: ProgramLike): void {
  const live = pinnedLink(pinDir, port, d, mech);
  if (live) {
    try {
      live.update(prog);
    } finally {
      live.close();
    }
    return;
  }
  // Another mechanism's link (or a stale one) may be pinned here: it keeps running, under
  // another name, until the new link is in; if the new one cannot be made, it goes back.
  const path = linkPin(pinDir, port.iface, d);
  const old = existsSync(path) ? `${path}_old` : undefined; // (bpffs refuses names with a dot)
  if (old) movePin(path, old);
  try {
    const l = mech === 'xdp' ? attachXdp(prog, port.ifindex) : attachTcx(prog, port.ifindex, TC_SIDE[d], { first: true });
    try {
      l.pin(path);
    } catch (e) {
      l.detach();
      throw e;
    } finally {
      l.close();
    }
  } catch (e) {
    if (old) movePin(old, path);
    throw e;
  }
  if (old) detachPinned(old, port, d);
}

// ---- a port ---------------------------------------------------------------------------------

/**
 * Put the port's programs on the tap with the plan's mechanisms, replacing
 * nwf-fast's programs already there in place (tc replace, link update), and
 * removing those of another mechanism once the new ones are in. Call it in
 * the tap's network namespace; `pinDir` must be on bpffs for tcx and xdp.
 */
export function attachPort(port: Port, programs: PortPrograms, plan: HookPlan, pinDir: string): PortAttachment {
  const res: PortAttachment = { iface: port.iface, ifindex: port.ifindex, hooks: { ...plan }, notes: [] };
  if (plan.out !== 'tc' || plan.in !== 'tc') mkdirSync(tapPinDir(ensureBpffs(pinDir), port.iface), { recursive: true, mode: 0o700 });
  for (const d of PORT_DIRECTIONS) {
    let mech: HookMechanism = plan[d];
    let prog = programs[d];
    if (mech === 'xdp') {
      try {
        linkDirection(pinDir, port, d, 'xdp', prog);
      } catch (e) {
        // another XDP program on the tap, or a driver without XDP: the tc program protects it instead
        const errno = e instanceof BpfError ? e.details.errno : undefined;
        if (!programs.outTc || (errno !== EBUSY && errno !== EOPNOTSUPP && errno !== EINVAL)) throw e;
        mech = plan.in;
        prog = programs.outTc;
        res.hooks.out = mech;
        res.notes.push(`${port.iface}: XDP not attached (${(e as Error).message}); from the VM on ${mech} instead`);
      }
    }
    if (mech === 'tcx') linkDirection(pinDir, port, d, 'tcx', prog);
    if (mech === 'tc') {
      tcHookCreate(port.ifindex);
      tcReplace(prog, tcSpec(port.ifindex, d));
    }
    // the new program is in: take off what another mechanism left on this direction
    if (mech !== 'tc') tcDetach(tcSpec(port.ifindex, d));
    else if (existsSync(linkPin(pinDir, port.iface, d))) dropLink(pinDir, port, d);
  }
  return res;
}

/**
 * attachPort for many ports with one plan. With tc both ways (the default),
 * every port's clsact qdisc and both filters go to the kernel as batches of
 * rtnetlink requests on one socket (rtnl.ts) instead of three libbpf calls
 * per port, each with a socket of its own; the links another mechanism left
 * pinned for these ports are removed after. Other plans go port by port.
 * Throws the first failure once every request was answered (the ports
 * before and after it may carry the programs: the caller detaches them, as
 * after a failed attachPort).
 */
export function attachPorts(items: readonly { port: Port; programs: PortPrograms }[], plan: HookPlan, pinDir: string): PortAttachment[] {
  if (plan.out !== 'tc' || plan.in !== 'tc') return items.map((x) => attachPort(x.port, x.programs, plan, pinDir));
  const reqs: TcRequest[] = [];
  for (const { port, programs } of items) {
    reqs.push({ kind: 'clsact', ifindex: port.ifindex });
    for (const d of PORT_DIRECTIONS) reqs.push({ kind: 'filter', ...tcSpec(port.ifindex, d), prog: programs[d] });
  }
  const failed = tcRequests(reqs).find((r) => !tcRequestOk(r));
  if (failed) throw tcRequestError(failed);
  const linked = new Set(pinnedTaps(pinDir));
  return items.map(({ port }) => {
    if (linked.has(port.iface)) for (const d of PORT_DIRECTIONS) if (existsSync(linkPin(pinDir, port.iface, d))) dropLink(pinDir, port, d);
    return { iface: port.iface, ifindex: port.ifindex, hooks: { ...plan }, notes: [] };
  });
}

/** Remove nwf-fast's programs from the port (links and tc filters; pins of a gone tap too). */
export function detachPort(port: Port | { iface: string; ifindex?: undefined }, pinDir: string): void {
  // links are pinned under the tap's directory: without it (tc), only the tc filters
  const links = existsSync(tapPinDir(pinDir, port.iface));
  for (const d of PORT_DIRECTIONS) {
    if (port.ifindex !== undefined) {
      if (links) dropLink(pinDir, port as Port, d);
      tcDetach(tcSpec(port.ifindex, d));
    } else if (links) {
      rmSync(linkPin(pinDir, port.iface, d), { force: true });
    }
  }
  if (links) rmSync(tapPinDir(pinDir, port.iface), { recursive: true, force: true });
}

export interface DirectionAttachment {
  mechanism: HookMechanism;
  /** Kernel id of the attached program. */
  progId: number;
}

/**
 * What of nwf-fast runs on the port: per direction, the first of its
 * programs a frame meets (XDP, then tcx, then the clsact filter), or
 * undefined when there is none.
 */
export function queryPort(port: Port, pinDir: string): Record<PortDirection, DirectionAttachment | undefined> {
  const out = {} as Record<PortDirection, DirectionAttachment | undefined>;
  for (const d of PORT_DIRECTIONS) {
    let found: DirectionAttachment | undefined;
    const l = pinnedLink(pinDir, port, d);
    if (l) {
      try {
        const info = l.info();
        found = { mechanism: info.type === BpfLinkType.XDP ? 'xdp' : 'tcx', progId: info.progId };
      } finally {
        l.close();
      }
    }
    if (!found) {
      const t = tcQuery(tcSpec(port.ifindex, d));
      if (t) found = { mechanism: 'tc', progId: t.progId };
    }
    out[d] = found;
  }
  return out;
}

/** The taps with pinned links under `pinDir` (their directories), for cleanup. */
export function pinnedTaps(pinDir: string): string[] {
  if (!existsSync(pinDir)) return [];
  return readdirSync(pinDir)
    .filter((d) => d.startsWith('tap-'))
    .map((d) => d.slice('tap-'.length).replace(/%([0-9a-f]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16))));
}
