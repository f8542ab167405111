// BPF links: tcx (kernel >= 6.6, a SCHED_CLS program on an interface's
// ingress or egress without a clsact qdisc) and XDP (a program on an
// interface's receive path, before the skb exists). libbpf 1.1 predates the
// tcx helpers (bpf_program__attach_tcx, libbpf 1.3), so links are created with
// the generic bpf_link_create and the attach type numbers of the kernel's
// enum bpf_attach_type (checked against this kernel's BTF: BPF_XDP = 37,
// BPF_TCX_INGRESS = 46, BPF_TCX_EGRESS = 47; Debian 12's linux/bpf.h (6.1)
// stops at BPF_LSM_CGROUP = 43). libbpf 1.1 passes `flags` through to
// BPF_LINK_CREATE for these attach types and leaves the rest of the
// attribute zero: for tcx that is "no relative program, any revision", so
// BPF_F_BEFORE puts the link first on the hook (kernel/bpf/mprog.c); for XDP
// the flags are the XDP_FLAGS_* mode. The target is an ifindex, resolved in
// the calling thread's network namespace (use withNetns).
//
// bpf_link_update swaps the link's program atomically; the link holds the
// attachment alive while its fd is open or it is pinned.
import { checkInt, invalid } from './call.js';
import { BpfError, EBADF, ENODEV } from './errors.js';
import { closeFd, LINK_INFO, objGet, objInfo, pinFd } from './fd.js';
import { libbpf, STRUCT_SIZES } from './ffi.js';
import { unpinPath } from './bpffs.js';
import { progFd, progLabel, type ProgramLike } from './program.js';
import type { TcDirection } from './tc.js';

export const BPF_XDP = 37;
export const BPF_TCX_INGRESS = 46;
export const BPF_TCX_EGRESS = 47;
/** bpf_link_update flag: only replace if the current program is old_prog_fd. */
export const BPF_F_REPLACE = 4;
/** BPF_LINK_CREATE flag for multi-program hooks (tcx): insert before the relative program (none: first). */
export const BPF_F_BEFORE = 8;
/** XDP_FLAGS_* (linux/if_link.h): the attach mode of an XDP link. */
export const XDP_FLAGS = { SKB_MODE: 2, DRV_MODE: 4 } as const;

/** enum bpf_link_type (subset). */
export const BpfLinkType = { XDP: 6, TCX: 11, NETKIT: 13 } as const;

export interface BpfLinkInfo {
  type: number;
  id: number;
  progId: number;
  /** For tcx links: the interface (0 once detached) and attach type. */
  tcx?: { ifindex: number; attachType: number };
  /** For XDP links: the interface (0 once detached). */
  xdp?: { ifindex: number };
}

export class BpfLink {
  #fd: number;
  readonly label: string;

  /** Wrap a link fd, taking ownership. */
  constructor(fd: number, label = `link fd ${fd}`) {
    this.#fd = fd;
    this.label = label;
  }

  get fd(): number {
    if (this.#fd < 0) throw new BpfError('link fd', this.label, EBADF, [], { hint: 'the link was closed' });
    return this.#fd;
  }

  get closed(): boolean {
    return this.#fd < 0;
  }

  /** bpf_obj_get_info_by_fd on the link: its type, id and current program id. */
  info(): BpfLinkInfo {
    const b = objInfo(this.fd, LINK_INFO.size, this.label);
    const info: BpfLinkInfo = { type: b.readUInt32LE(LINK_INFO.type), id: b.readUInt32LE(LINK_INFO.id), progId: b.readUInt32LE(LINK_INFO.progId) };
    if (info.type === BpfLinkType.TCX) {
      info.tcx = { ifindex: b.readUInt32LE(LINK_INFO.union), attachType: b.readUInt32LE(LINK_INFO.union + 4) };
    } else if (info.type === BpfLinkType.XDP) {
      info.xdp = { ifindex: b.readUInt32LE(LINK_INFO.union) };
    }
    return info;
  }

  /**
   * bpf_link_update: atomically swap in `prog`. With `expect`, the swap only
   * happens if the current program is `expect` (BPF_F_REPLACE; EPERM otherwise).
   */
  update(prog: ProgramLike, opts: { expect?: ProgramLike } = {}): void {
    const o = {
      sz: STRUCT_SIZES.bpf_link_update_opts,
      flags: opts.expect !== undefined ? BPF_F_REPLACE : 0,
      old_prog_fd: opts.expect !== undefined ? progFd(opts.expect) : 0,
    };
    checkInt('bpf_link_update', `${this.label} <- ${progLabel(prog)}`, () => libbpf().bpf_link_update(this.fd, progFd(prog), o));
  }

  /** Pin the link in bpffs so the attachment outlives this process. */
  pin(path: string): void {
    pinFd(this.fd, path, this.label);
  }

  /** Remove a pin of the link (the attachment lives on while the fd is open). */
  unpin(path: string): void {
    unpinPath(path);
  }

  /**
   * bpf_link_detach: detach the program now, even if the link is pinned or
   * other fds refer to it. The fd stays open (close() it).
   */
  detach(): void {
    checkInt('bpf_link_detach', this.label, () => libbpf().bpf_link_detach(this.fd));
  }

  /** Close the fd. An unpinned link with no other fd detaches here. */
  close(): void {
    if (this.#fd >= 0) {
      closeFd(this.#fd);
      this.#fd = -1;
    }
  }
}

function linkCreate(prog: ProgramLike, target: number, attachType: number, flags: number, label: string): BpfLink {
  const o = { sz: STRUCT_SIZES.bpf_link_create_opts, flags, iter_info: null, iter_info_len: 0, target_btf_id: 0, _union: [0n, 0n, 0n, 0n] };
  const fd = checkInt('bpf_link_create', label, () => libbpf().bpf_link_create(progFd(prog), target, attachType, o));
  return new BpfLink(fd, label);
}

export interface TcxAttachOptions {
  /** Run before every program already on the hook (BPF_F_BEFORE); default: after them. */
  first?: boolean;
}

/**
 * Attach `prog` (SCHED_CLS) to `ifindex` with a tcx link: after the programs
 * already there, or first of all with `first`. Kernels without tcx fail with
 * EINVAL.
 */
export function attachTcx(prog: ProgramLike, ifindex: number, direction: TcDirection, opts: TcxAttachOptions = {}): BpfLink {
  if (!Number.isInteger(ifindex) || ifindex <= 0) throw invalid('bpf_link_create', `tcx ${direction}`, `a positive ifindex, got ${ifindex}`);
  const attachType = direction === 'ingress' ? BPF_TCX_INGRESS : direction === 'egress' ? BPF_TCX_EGRESS : undefined;
  if (attachType === undefined) throw invalid('bpf_link_create', `tcx on ifindex ${ifindex}`, `direction ingress or egress, got ${String(direction)}`);
  return linkCreate(prog, ifindex, attachType, opts.first ? BPF_F_BEFORE : 0, `tcx ${direction} link of ${progLabel(prog)} on ifindex ${ifindex}`);
}

/** Where an XDP program runs: the driver's own hook (tun, veth) or the generic one on the skb; auto: the driver's if it has one. */
export type XdpMode = 'native' | 'generic' | 'auto';

/**
 * Attach `prog` (XDP) to `ifindex` with an XDP link. An interface holds one
 * XDP program per mode: EBUSY when another is attached (by a link or by
 * netlink), EOPNOTSUPP for `native` on a driver without XDP support.
 */
export function attachXdp(prog: ProgramLike, ifindex: number, mode: XdpMode = 'auto'): BpfLink {
  if (!Number.isInteger(ifindex) || ifindex <= 0) throw invalid('bpf_link_create', 'xdp', `a positive ifindex, got ${ifindex}`);
  const flags = mode === 'native' ? XDP_FLAGS.DRV_MODE : mode === 'generic' ? XDP_FLAGS.SKB_MODE : mode === 'auto' ? 0 : undefined;
  if (flags === undefined) throw invalid('bpf_link_create', `xdp on ifindex ${ifindex}`, `mode native, generic or auto, got ${String(mode)}`);
  return linkCreate(prog, ifindex, BPF_XDP, flags, `xdp${mode === 'auto' ? '' : ` (${mode})`} link of ${progLabel(prog)} on ifindex ${ifindex}`);
}

/**
 * Whether the kernel has tcx links: a tcx link for ifindex 0 (which no
 * interface has) fails with ENODEV where tcx exists (the device lookup comes
 * after the attach type is accepted) and with EINVAL where it does not.
 * Attaches nothing. `prog` is any loaded SCHED_CLS program.
 */
export function kernelHasTcx(prog: ProgramLike): boolean {
  const o = { sz: STRUCT_SIZES.bpf_link_create_opts, flags: 0, iter_info: null, iter_info_len: 0, target_btf_id: 0, _union: [0n, 0n, 0n, 0n] };
  const r = libbpf().bpf_link_create(progFd(prog), 0, BPF_TCX_INGRESS, o);
  if (r >= 0) {
    // cannot happen (no interface has index 0); do not keep what was made
    new BpfLink(r).close();
    return true;
  }
  return -r === ENODEV;
}

/** Open a pinned link (bpf_obj_get). */
export function openPinnedLink(path: string): BpfLink {
  return new BpfLink(objGet(path), `link ${path}`);
}
