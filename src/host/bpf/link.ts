// BPF links, in particular tcx (kernel >= 6.6): a SCHED_CLS program attached
// to an interface's ingress or egress through a bpf_link instead of a clsact
// qdisc. libbpf 1.1 predates the tcx helpers (bpf_program__attach_tcx, libbpf
// 1.3), so links are created with the generic bpf_link_create and the attach
// type numbers from the kernel's enum bpf_attach_type (checked against this
// kernel's BTF: BPF_TCX_INGRESS = 46, BPF_TCX_EGRESS = 47; Debian 12's
// linux/bpf.h (6.1) stops at BPF_LSM_CGROUP = 43). For tcx the link's
// target_fd is the ifindex, resolved in the calling thread's network
// namespace (use withNetns).
//
// bpf_link_update swaps the link's program atomically; the link holds the
// attachment alive while its fd is open or it is pinned.
import { checkInt, invalid } from './call.js';
import { BpfError, EBADF } from './errors.js';
import { closeFd, LINK_INFO, objGet, objInfo, pinFd } from './fd.js';
import { libbpf, STRUCT_SIZES } from './ffi.js';
import { unpinPath } from './bpffs.js';
import { progFd, progLabel, type ProgramLike } from './program.js';
import type { TcDirection } from './tc.js';

export const BPF_TCX_INGRESS = 46;
export const BPF_TCX_EGRESS = 47;
/** bpf_link_update flag: only replace if the current program is old_prog_fd. */
export const BPF_F_REPLACE = 4;

/** enum bpf_link_type (subset). */
export const BpfLinkType = { TCX: 11, NETKIT: 13 } as const;

export interface BpfLinkInfo {
  type: number;
  id: number;
  progId: number;
  /** For tcx links: the interface (0 once detached) and attach type. */
  tcx?: { ifindex: number; attachType: number };
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

/**
 * Attach `prog` (SCHED_CLS) to `ifindex` with a tcx link, appended after any
 * programs already there. Kernels without tcx fail with EINVAL.
 */
export function attachTcx(prog: ProgramLike, ifindex: number, direction: TcDirection): BpfLink {
  if (!Number.isInteger(ifindex) || ifindex <= 0) throw invalid('bpf_link_create', `tcx ${direction}`, `a positive ifindex, got ${ifindex}`);
  const attachType = direction === 'ingress' ? BPF_TCX_INGRESS : direction === 'egress' ? BPF_TCX_EGRESS : undefined;
  if (attachType === undefined) throw invalid('bpf_link_create', `tcx on ifindex ${ifindex}`, `direction ingress or egress, got ${String(direction)}`);
  const label = `tcx ${direction} link of ${progLabel(prog)} on ifindex ${ifindex}`;
  const o = { sz: STRUCT_SIZES.bpf_link_create_opts, flags: 0, iter_info: null, iter_info_len: 0, target_btf_id: 0, _union: [0n, 0n, 0n, 0n] };
  const fd = checkInt('bpf_link_create', label, () => libbpf().bpf_link_create(progFd(prog), ifindex, attachType, o));
  return new BpfLink(fd, label);
}

/** Open a pinned link (bpf_obj_get). */
export function openPinnedLink(path: string): BpfLink {
  return new BpfLink(objGet(path), `link ${path}`);
}
