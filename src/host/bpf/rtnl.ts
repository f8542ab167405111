// tc attachments of many ports at once: the clsact qdiscs and cls_bpf
// filters that tc.ts makes one libbpf call at a time (each call opens a
// netlink socket, sends one request, waits for its answer, closes), written
// here as rtnetlink requests into one socket, many per send, and their
// acknowledgements matched by sequence number. The kernel handles each
// request of a send on its own (one failing does not stop the next), with the
// same effect as the libbpf calls:
//   clsact   RTM_NEWQDISC, NLM_F_CREATE|NLM_F_EXCL (EEXIST: already there,
//            left as it is with whatever other tools attached to it);
//   filter   RTM_NEWTFILTER, NLM_F_CREATE|NLM_F_REPLACE: a direct-action
//            cls_bpf filter (handle, priority), created or its program
//            replaced in place (bpf_tc_attach with BPF_TC_F_REPLACE).
// Run in the ports' network namespace (the socket belongs to the calling
// thread's namespace when it is opened).
import { NfnlSocket } from '../nfnl/socket.js';
import type { NlReply } from '../nfnl/netlink.js';
import { NLA_F_NESTED, NLA_HDRLEN, NLMSG_HDRLEN, NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST } from '../nfnl/uapi.js';
import { BpfError, EEXIST } from './errors.js';
import { progFd, progLabel, type ProgramLike } from './program.js';
import type { TcDirection } from './tc.js';

const NETLINK_ROUTE = 0;
const RTM_NEWQDISC = 36;
const RTM_NEWTFILTER = 44;
const NLM_F_REPLACE = 0x100;
const NLM_F_EXCL = 0x200;
/** struct tcmsg: family u8, pad u8, pad u16, ifindex s32, handle u32, parent u32, info u32. */
const TCMSG_LEN = 20;
const TCA_KIND = 1;
const TCA_OPTIONS = 2;
const TCA_BPF_FD = 6;
const TCA_BPF_NAME = 7;
const TCA_BPF_FLAGS = 8;
const TCA_BPF_FLAG_ACT_DIRECT = 1;
/** TC_H_CLSACT (= TC_H_INGRESS) and the minors of its two hooks. */
const TC_H_CLSACT = 0xfffffff1;
const TC_H_MIN_INGRESS = 0xfff2;
const TC_H_MIN_EGRESS = 0xfff3;
const ETH_P_ALL = 0x0003;

/** Requests per send: their acknowledgements (36 bytes each, capped) fit the receive buffer many times over. */
const PER_SEND = 256;
/** How long the acknowledgements of one send may take in all (the kernel answers within the send). */
const ACK_TIMEOUT_MS = 10_000;
const ETIMEDOUT = 110;

export type TcRequest =
  | { kind: 'clsact'; ifindex: number }
  | { kind: 'filter'; ifindex: number; direction: TcDirection; handle: number; priority: number; prog: ProgramLike };

/** The kernel's answer to one request: 0, or the errno. */
export interface TcResult {
  req: TcRequest;
  errno: number;
  /** The kernel's extended-ack message, if any. */
  message?: string;
}

const align4 = (n: number): number => (n + 3) & ~3;

/** What libbpf names a filter's program (TCA_BPF_NAME): "name:[id]" (the kernel keeps 15 characters of a name). */
function filterName(prog: ProgramLike, names: Map<ProgramLike, string>): string {
  let n = names.get(prog);
  if (n === undefined) {
    n = typeof prog === 'number' ? `fd${prog}` : `${prog.name.slice(0, 15)}:[${prog.id}]`;
    names.set(prog, n);
  }
  return n;
}

/** Writes rtnetlink tc requests one after the other into a buffer (one send). */
class TcWriter {
  buf = Buffer.alloc(PER_SEND * 96);
  len = 0;

  private room(n: number): number {
    const at = this.len;
    if (at + n > this.buf.length) {
      const b = Buffer.alloc(2 * (at + n));
      this.buf.copy(b, 0, 0, at);
      this.buf = b;
    }
    this.buf.fill(0, at, at + n);
    this.len = at + n;
    return at;
  }

  private attr(type: number, payload: Buffer): void {
    const at = this.room(align4(NLA_HDRLEN + payload.length));
    this.buf.writeUInt16LE(NLA_HDRLEN + payload.length, at);
    this.buf.writeUInt16LE(type, at + 2);
    payload.copy(this.buf, at + NLA_HDRLEN);
  }

  private u32attr(type: number, v: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v >>> 0);
    this.attr(type, b);
  }

  /** One request: header, struct tcmsg, then its attributes. */
  request(type: number, flags: number, seq: number, tcm: { ifindex: number; handle: number; parent: number; info: number }, attrs: () => void): void {
    const at = this.room(NLMSG_HDRLEN + TCMSG_LEN);
    this.buf.writeUInt16LE(type, at + 4);
    this.buf.writeUInt16LE(NLM_F_REQUEST | NLM_F_ACK | flags, at + 6);
    this.buf.writeUInt32LE(seq >>> 0, at + 8);
    const t = at + NLMSG_HDRLEN;
    this.buf.writeInt32LE(tcm.ifindex, t + 4);
    this.buf.writeUInt32LE(tcm.handle >>> 0, t + 8);
    this.buf.writeUInt32LE(tcm.parent >>> 0, t + 12);
    this.buf.writeUInt32LE(tcm.info >>> 0, t + 16);
    attrs();
    this.buf.writeUInt32LE(this.len - at, at);
  }

  kind(kind: string): void {
    this.attr(TCA_KIND, Buffer.from(`${kind}\0`));
  }

  /** TCA_OPTIONS of a direct-action cls_bpf filter. */
  bpfOptions(fd: number, name: string): void {
    const at = this.room(NLA_HDRLEN);
    this.buf.writeUInt16LE(TCA_OPTIONS | NLA_F_NESTED, at + 2);
    this.u32attr(TCA_BPF_FD, fd);
    this.attr(TCA_BPF_NAME, Buffer.from(`${name}\0`));
    this.u32attr(TCA_BPF_FLAGS, TCA_BPF_FLAG_ACT_DIRECT);
    this.buf.writeUInt16LE(this.len - at, at);
  }
}

function encode(w: TcWriter, r: TcRequest, seq: number, names: Map<ProgramLike, string>): void {
  if (r.kind === 'clsact') {
    w.request(RTM_NEWQDISC, NLM_F_CREATE | NLM_F_EXCL, seq, { ifindex: r.ifindex, handle: TC_H_CLSACT & 0xffff0000, parent: TC_H_CLSACT, info: 0 }, () => w.kind('clsact'));
    return;
  }
  const parent = ((TC_H_CLSACT & 0xffff0000) | (r.direction === 'ingress' ? TC_H_MIN_INGRESS : TC_H_MIN_EGRESS)) >>> 0;
  // tcm_info: the priority in the upper half, the protocol (network byte order) in the lower
  const info = ((r.priority << 16) | (((ETH_P_ALL & 0xff) << 8) | (ETH_P_ALL >> 8))) >>> 0;
  w.request(RTM_NEWTFILTER, NLM_F_CREATE | NLM_F_REPLACE, seq, { ifindex: r.ifindex, handle: r.handle, parent, info }, () => {
    w.kind('bpf');
    w.bpfOptions(progFd(r.prog), filterName(r.prog, names));
  });
}

/** The requests as rtnetlink messages, sequence numbers from `firstSeq` (what one send carries). */
export function encodeTcRequests(reqs: readonly TcRequest[], firstSeq: number): Buffer {
  const w = new TcWriter();
  const names = new Map<ProgramLike, string>();
  reqs.forEach((r, i) => encode(w, r, firstSeq + i, names));
  return w.buf.subarray(0, w.len);
}

/**
 * Sends the requests, PER_SEND at a time, and returns the kernel's answer to
 * each, in order. A request without an answer in time is reported as ETIMEDOUT.
 */
export function tcRequests(reqs: readonly TcRequest[]): TcResult[] {
  const out: TcResult[] = [];
  if (!reqs.length) return out;
  const sock = NfnlSocket.open(NETLINK_ROUTE);
  try {
    for (let from = 0; from < reqs.length; from += PER_SEND) {
      const chunk = reqs.slice(from, from + PER_SEND);
      const first = sock.reserveSeq(chunk.length);
      sock.send(encodeTcRequests(chunk, first));
      const answers = new Map<number, NlReply>();
      sock.receive((rs) => {
        for (const x of rs) if (x.errno !== undefined) answers.set(x.seq, x);
        return answers.size >= chunk.length;
      }, ACK_TIMEOUT_MS);
      chunk.forEach((req, i) => {
        const a = answers.get((first + i) >>> 0);
        out.push({ req, errno: a ? (a.errno as number) : ETIMEDOUT, ...(a?.extMsg ? { message: a.extMsg } : {}) });
      });
    }
  } finally {
    sock.close();
  }
  return out;
}


/** The error of a failed request, as the libbpf call it stands for would have thrown it. */
export function tcRequestError(r: TcResult): BpfError {
  const q = r.req;
  const log = r.message ? [`kernel: ${r.message}`] : [];
  if (q.kind === 'clsact') return new BpfError('bpf_tc_hook_create', `clsact on ifindex ${q.ifindex}`, r.errno, log);
  return new BpfError('bpf_tc_attach(BPF_TC_F_REPLACE)', `${progLabel(q.prog)} on ifindex ${q.ifindex} ${q.direction} handle ${q.handle} pref ${q.priority}`, r.errno, log);
}

/** Whether a result is a success (a clsact qdisc that exists already is one). */
export function tcRequestOk(r: TcResult): boolean {
  return r.errno === 0 || (r.req.kind === 'clsact' && r.errno === EEXIST);
}
