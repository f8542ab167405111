// Raw Ethernet frames in and out of network namespaces, in-process.
//
// A PacketSocket is an AF_PACKET/SOCK_RAW socket bound to one interface. It
// is created inside its namespace (withNetns) and stays bound there; sending
// and receiving afterwards work from whatever namespace the thread is in.
// All sockets are non-blocking; waiting is done with poll(2) on a koffi worker
// thread, so the event loop keeps running.
//
// deliver()/deliverMany() send a list of frames from one interface and report
// which of them arrived at one or more other interfaces, matched by their full
// bytes or by an 8-byte tag inside each frame.
import { CODES, NwfError } from '../util/errors.js';
import { ETHERTYPES } from '../ir/values.js';
import { ERRNO, libc, withNetns, ifIndex } from '../host/netns.js';

const AF_PACKET = 17;
const SOCK_RAW = 3;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const ETH_P_ALL = 0x0003;
const SOL_SOCKET = 1;
const SO_SNDBUFFORCE = 32;
const SO_RCVBUFFORCE = 33;
const SOL_PACKET = 263;
const PACKET_IGNORE_OUTGOING = 23;
const PACKET_OUTGOING = 4;
const MSG_DONTWAIT = 0x40;
const POLLIN = 0x1;
const POLLOUT = 0x4;
const SOCKADDR_LL_SIZE = 20;
const RX_BUF_SIZE = 65536;

function sockaddrLl(ifindex: number, protocol: number): Buffer {
  const a = Buffer.alloc(SOCKADDR_LL_SIZE);
  a.writeUInt16LE(AF_PACKET, 0); // sll_family (host order, x86-64 little endian)
  a.writeUInt16BE(protocol, 2); // sll_protocol, network order
  a.writeInt32LE(ifindex, 4); // sll_ifindex
  return a;
}

function intOpt(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32LE(v, 0);
  return b;
}

export interface PacketSocketOptions {
  /** Receive frames (bind to ETH_P_ALL). When false the socket only sends. Default true. */
  receive?: boolean;
  /** SO_RCVBUFFORCE in bytes (the kernel doubles it). Default 8 MiB for receiving sockets. */
  rcvbufBytes?: number;
  /** SO_SNDBUFFORCE in bytes. Default: kernel default. */
  sndbufBytes?: number;
}

export interface ReceiveOptions {
  /** Upper bound on waiting, in ms. Default 1000. */
  timeoutMs?: number;
  /** Return as soon as this many frames were received. Default unbounded (wait for the timeout). */
  max?: number;
  /** Return early once at least one frame arrived and nothing more came for this long. */
  quietMs?: number;
}

/** An AF_PACKET raw socket bound to one interface of one namespace. */
export class PacketSocket {
  private static readonly rxBuf = Buffer.alloc(RX_BUF_SIZE);
  private static readonly rxAddr = Buffer.alloc(SOCKADDR_LL_SIZE);
  private static readonly rxAddrLen = Buffer.alloc(4);
  private closed = false;

  private constructor(
    readonly fd: number,
    readonly ns: string,
    readonly ifname: string,
    readonly ifindex: number,
    readonly receives: boolean,
  ) {}

  /**
   * Opens a raw socket on `ifname` inside namespace `ns` (a name under
   * /run/netns: there is deliberately no way to open one in the namespace the
   * thread happens to be in, which could be the machine's). Incoming frames
   * are queued from this call on; outgoing frames (PACKET_OUTGOING) are never
   * delivered to it.
   */
  static open(ns: string, ifname: string, opts: PacketSocketOptions = {}): PacketSocket {
    const create = (): PacketSocket => {
      const c = libc();
      const idx = ifIndex(ifname);
      const receive = opts.receive ?? true;
      // Protocol 0 at socket() time: nothing is queued before bind() narrows
      // the socket to this interface.
      const fd = c.socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (fd < 0) throw sysError(`socket(AF_PACKET) for ${ifname}`, c.errno(), ns);
      try {
        if (receive) {
          setIntOpt(fd, SOL_SOCKET, SO_RCVBUFFORCE, opts.rcvbufBytes ?? 8 << 20, 'SO_RCVBUFFORCE', ns);
          setIntOpt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, 1, 'PACKET_IGNORE_OUTGOING', ns);
        }
        if (opts.sndbufBytes !== undefined) {
          setIntOpt(fd, SOL_SOCKET, SO_SNDBUFFORCE, opts.sndbufBytes, 'SO_SNDBUFFORCE', ns);
        }
        const addr = sockaddrLl(idx, receive ? ETH_P_ALL : 0);
        if (c.bind(fd, addr, SOCKADDR_LL_SIZE) !== 0) throw sysError(`bind(${ifname})`, c.errno(), ns);
      } catch (e) {
        c.close(fd);
        throw e;
      }
      return new PacketSocket(fd, ns, ifname, idx, receive);
    };
    return withNetns(ns, create);
  }

  private check(): void {
    if (this.closed) throw new NwfError(CODES.STATE_INVALID, `packet socket on ${this.where()} is closed`);
  }

  private where(): string {
    return `${this.ns}/${this.ifname}`;
  }

  /** Sends one frame; false when the socket buffer is full right now (EAGAIN/ENOBUFS). */
  trySend(frame: Uint8Array): boolean {
    this.check();
    const c = libc();
    const n = c.send(this.fd, frame, frame.byteLength, MSG_DONTWAIT);
    if (n >= 0) return true;
    const e = c.errno();
    if (e === ERRNO.EAGAIN || e === ERRNO.ENOBUFS || e === ERRNO.EINTR) return false;
    throw sysError(`send(${frame.byteLength} bytes) on ${this.where()}`, e, this.ns);
  }

  /** Sends one frame, waiting (bounded: 2 s) while the socket buffer is full. */
  send(frame: Uint8Array): void {
    for (let i = 0; i < 200; i++) {
      if (this.trySend(frame)) return;
      pollFds([this.fd], POLLOUT, 10);
    }
    throw new NwfError(CODES.COMMAND_FAILED, `send on ${this.where()}: socket buffer stayed full for 2 s`);
  }

  /** Reads every frame queued right now without waiting (at most `max`). */
  receiveNow(max = Number.POSITIVE_INFINITY): Uint8Array[] {
    const out: Uint8Array[] = [];
    this.readQueued(max, (f) => out.push(f));
    return out;
  }

  /** Discards every queued frame; returns how many were dropped. */
  drain(): number {
    let n = 0;
    this.readQueued(Number.POSITIVE_INFINITY, () => n++, false);
    return n;
  }

  /** @internal reads queued frames into `sink`; returns the number read. */
  readQueued(max: number, sink: (frame: Uint8Array) => void, copy = true): number {
    this.check();
    if (!this.receives) return 0;
    const c = libc();
    const buf = PacketSocket.rxBuf;
    const addr = PacketSocket.rxAddr;
    const addrLen = PacketSocket.rxAddrLen;
    let count = 0;
    // Bounded: never more than `max`, and at most 1M frames per call.
    for (let guard = 0; count < max && guard < 1_000_000; guard++) {
      addrLen.writeUInt32LE(SOCKADDR_LL_SIZE, 0);
      const n = c.recvfrom(this.fd, buf, RX_BUF_SIZE, MSG_DONTWAIT, addr, addrLen);
      if (n < 0) {
        const e = c.errno();
        if (e === ERRNO.EAGAIN || e === ERRNO.EINTR) break;
        throw sysError(`recvfrom on ${this.where()}`, e, this.ns);
      }
      if (addr[10] === PACKET_OUTGOING) continue;
      count++;
      sink(copy ? Uint8Array.prototype.slice.call(buf, 0, n) : buf.subarray(0, n));
    }
    return count;
  }

  /** Collects frames until `max` arrived, the socket stayed quiet for `quietMs`, or `timeoutMs` passed. */
  async receive(opts: ReceiveOptions = {}): Promise<Uint8Array[]> {
    const timeoutMs = opts.timeoutMs ?? 1000;
    const max = opts.max ?? Number.POSITIVE_INFINITY;
    const deadline = performance.now() + timeoutMs;
    const out: Uint8Array[] = [];
    for (let guard = 0; guard < 100_000; guard++) {
      this.readQueued(max - out.length, (f) => out.push(f));
      if (out.length >= max) break;
      const left = deadline - performance.now();
      if (left <= 0) break;
      const wait = opts.quietMs !== undefined && out.length > 0 ? Math.min(opts.quietMs, left) : left;
      const ready = await libc().pollAsync(pollBuffer([this.fd], POLLIN), 1, Math.max(1, Math.ceil(wait)));
      if (ready === 0 && opts.quietMs !== undefined && out.length > 0) break;
    }
    return out;
  }

  /**
   * Closes the socket without blocking: the kernel waits for an RCU grace
   * period on every AF_PACKET close (8-16 ms here), so close(2) runs on a
   * koffi worker thread. settlePacketSockets() waits for pending closes.
   */
  close(): void {
    void this.closeAsync();
  }

  /** Closes the socket; resolves when close(2) returned. */
  closeAsync(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    const p = libc()
      .closeAsync(this.fd)
      .then(
        () => undefined,
        () => undefined,
      )
      .finally(() => pendingCloses.delete(p));
    pendingCloses.add(p);
    return p;
  }
}

const pendingCloses = new Set<Promise<void>>();

/** Resolves once every PacketSocket close started so far has completed. */
export async function settlePacketSockets(): Promise<void> {
  await Promise.all([...pendingCloses]);
}

function setIntOpt(fd: number, level: number, name: number, value: number, what: string, ns: string | null): void {
  const c = libc();
  if (c.setsockopt(fd, level, name, intOpt(value), 4) !== 0) throw sysError(`setsockopt(${what})`, c.errno(), ns);
}

function sysError(what: string, errno: number, ns: string | null): NwfError {
  return new NwfError(CODES.COMMAND_FAILED, `${what} failed: errno ${errno}${ns ? ` (namespace ${ns})` : ''}`, {
    hint: errno === ERRNO.ENODEV ? 'the interface is gone or down' : undefined,
  });
}

function pollBuffer(fds: readonly number[], events: number): Buffer {
  const b = Buffer.alloc(8 * fds.length);
  fds.forEach((fd, i) => {
    b.writeInt32LE(fd, i * 8);
    b.writeInt16LE(events, i * 8 + 4);
  });
  return b;
}

function pollFds(fds: readonly number[], events: number, timeoutMs: number): number {
  return libc().poll(pollBuffer(fds, events), fds.length, timeoutMs);
}

// ---------------------------------------------------------------------------
// deliver

/** An interface inside a namespace. */
export interface Endpoint {
  ns: string;
  ifname: string;
}

export interface DeliverOptions {
  /**
   * One 8-byte tag per frame (see frameTag): match received frames by the
   * tag anywhere in the frame (or at tagOffset) instead of by full bytes.
   */
  tags?: readonly Uint8Array[];
  /** Where the tag sits in each frame, to skip searching. */
  tagOffset?: number;
  /**
   * Match by a canonical form of the frame instead of its exact bytes (both
   * sent and received frames go through it), e.g. canonicalFrame(), since
   * the kernel moves VLAN tags out of received frames and br_netfilter trims
   * IP frames to their IP length.
   */
  key?: (frame: Uint8Array) => Uint8Array;
  /** Collection ends after this much silence once everything is sent. Default 50 ms. */
  quietMs?: number;
  /** Upper bound on collecting after the last frame was sent. Default 1000 ms. */
  maxWaitMs?: number;
  /** Frames sent between two reads of the receivers. Default 256. */
  batchSize?: number;
  /** Keep at most this many unmatched received frames per destination. Default 100. */
  keepUnmatched?: number;
}

export interface DeliverResult {
  /** arrived[i]: frame i was received at the destination (at least once). */
  arrived: boolean[];
  /** How many times frame i was received. */
  counts: number[];
  /** Frames received that matched no sent frame (noise: NDP, MLD, ...), capped. */
  unmatched: Uint8Array[];
  /** Total frames read at the destination. */
  received: number;
  sent: number;
  /** Wall time from first send to end of collection. */
  elapsedMs: number;
}

type Side = Endpoint | PacketSocket;

/**
 * A frame as a receiver sees it: 802.1Q/802.1ad tags removed (the receive
 * path moves them out of the data) and IPv4/IPv6 frames cut to their IP
 * length (br_netfilter trims the padding).
 */
export function canonicalFrame(f: Uint8Array): Uint8Array {
  if (f.length < 14) return f;
  let b = f;
  for (let guard = 0; guard < 4 && b.length >= 18; guard++) {
    const t = ((b[12] as number) << 8) | (b[13] as number);
    if (t !== ETHERTYPES.VLAN && t !== ETHERTYPES.QINQ) break;
    const nb = new Uint8Array(b.length - 4);
    nb.set(b.subarray(0, 12), 0);
    nb.set(b.subarray(16), 12);
    b = nb;
  }
  const type = ((b[12] as number) << 8) | (b[13] as number);
  if (type === ETHERTYPES.IPV4 && b.length >= 18) {
    const tot = ((b[16] as number) << 8) | (b[17] as number);
    if (tot >= 20 && 14 + tot < b.length) return b.subarray(0, 14 + tot);
  } else if (type === ETHERTYPES.IPV6 && b.length >= 54) {
    const plen = ((b[18] as number) << 8) | (b[19] as number);
    if (54 + plen < b.length) return b.subarray(0, 54 + plen);
  }
  return b;
}

/** 8-byte tag "NW" + 16-bit salt + 32-bit index, for frames deliver() should match by tag. */
export function frameTag(index: number, salt = 0): Uint8Array {
  const t = new Uint8Array(8);
  const v = new DataView(t.buffer);
  t[0] = 0x4e;
  t[1] = 0x57;
  v.setUint16(2, salt & 0xffff);
  v.setUint32(4, index >>> 0);
  return t;
}

function latin1(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('latin1');
}

/** Credits received frames to sent ones, per destination. */
class Matcher {
  readonly counts: number[];
  readonly unmatched: Uint8Array[] = [];
  received = 0;
  /** Sent frames not received yet. */
  pending: number;
  private readonly index = new Map<string, number[]>();
  private readonly byTag: boolean;

  constructor(
    frames: readonly Uint8Array[],
    private readonly opts: DeliverOptions,
  ) {
    this.counts = new Array<number>(frames.length).fill(0);
    this.pending = frames.length;
    this.byTag = opts.tags !== undefined;
    const keys = opts.tags ?? (opts.key ? frames.map(opts.key) : frames);
    if (opts.tags && opts.tags.length !== frames.length) {
      throw new NwfError(CODES.VALUE_INVALID, `deliver: ${opts.tags.length} tags for ${frames.length} frames`);
    }
    keys.forEach((k, i) => {
      if (this.byTag && k.byteLength !== 8) throw new NwfError(CODES.VALUE_INVALID, `deliver: tag ${i} is not 8 bytes`);
      const key = latin1(k);
      const list = this.index.get(key);
      if (list) list.push(i);
      else this.index.set(key, [i]);
    });
  }

  private lookup(frame: Uint8Array): number[] | undefined {
    const s = latin1(!this.byTag && this.opts.key ? this.opts.key(frame) : frame);
    if (!this.byTag) return this.index.get(s);
    if (this.opts.tagOffset !== undefined) return this.index.get(s.substr(this.opts.tagOffset, 8));
    for (let i = 0; i + 8 <= s.length; i++) {
      const hit = this.index.get(s.substr(i, 8));
      if (hit) return hit;
    }
    return undefined;
  }

  add(frame: Uint8Array): void {
    this.received++;
    const hit = this.lookup(frame);
    if (!hit) {
      if (this.unmatched.length < (this.opts.keepUnmatched ?? 100)) this.unmatched.push(frame.slice());
      return;
    }
    // Identical frames sent several times: credit the first not yet seen.
    const i = hit.find((j) => this.counts[j] === 0) ?? hit[0]!;
    this.counts[i] = (this.counts[i] ?? 0) + 1;
    if (this.counts[i] === 1) this.pending--;
  }
}

/**
 * Sends `frames` from `from` and reports, for each destination in `to`,
 * which frames arrived there. Frames are sent in batches; receivers are read
 * between batches and then until they stay quiet for quietMs (or maxWaitMs
 * passes, or every frame arrived everywhere). Endpoints given as {ns, ifname}
 * get sockets opened before the first send and closed at the end; open
 * PacketSockets are used as they are (drain them first if needed).
 */
export async function deliverMany(
  from: Side,
  to: readonly Side[],
  frames: readonly Uint8Array[],
  opts: DeliverOptions = {},
): Promise<DeliverResult[]> {
  const owned: PacketSocket[] = [];
  const openSide = (s: Side, receive: boolean): PacketSocket => {
    if (s instanceof PacketSocket) return s;
    const sock = PacketSocket.open(s.ns, s.ifname, { receive });
    owned.push(sock);
    return sock;
  };
  try {
    const receivers = to.map((s) => openSide(s, true));
    const sender = openSide(from, false);
    const matchers = receivers.map(() => new Matcher(frames, opts));
    const readAll = (): void => {
      receivers.forEach((r, k) => r.readQueued(Number.POSITIVE_INFINITY, (f) => matchers[k]!.add(f), false));
    };
    const batch = Math.max(1, opts.batchSize ?? 256);
    const t0 = performance.now();
    for (let i = 0; i < frames.length; i++) {
      sender.send(frames[i]!);
      if ((i + 1) % batch === 0) readAll();
    }
    const quietMs = opts.quietMs ?? 50;
    const deadline = performance.now() + (opts.maxWaitMs ?? 1000);
    const pfd = pollBuffer(
      receivers.map((r) => r.fd),
      POLLIN,
    );
    for (let guard = 0; guard < 100_000; guard++) {
      readAll();
      if (matchers.every((m) => m.pending === 0)) break;
      const left = deadline - performance.now();
      if (left <= 0) break;
      const ready = await libc().pollAsync(pfd, receivers.length, Math.max(1, Math.ceil(Math.min(quietMs, left))));
      if (ready === 0) {
        readAll();
        break;
      }
    }
    const elapsedMs = performance.now() - t0;
    return matchers.map((m) => ({
      arrived: m.counts.map((c) => c > 0),
      counts: m.counts,
      unmatched: m.unmatched,
      received: m.received,
      sent: frames.length,
      elapsedMs,
    }));
  } finally {
    for (const s of owned) s.close();
  }
}

/** deliverMany() with one destination. */
export async function deliver(
  from: Side,
  to: Side,
  frames: readonly Uint8Array[],
  opts: DeliverOptions = {},
): Promise<DeliverResult> {
  const [r] = await deliverMany(from, [to], frames, opts);
  return r!;
}
