// The peer's view: counts the marked frames (nwf-send's) that arrive at one
// interface, by kind and tag, over time. It reads in the background until
// stop() or its bound (maxMs, maxFrames), whichever comes first.
import { PacketSocket, type Endpoint } from '../packet-io.js';
import { FRAME_KINDS, parseMarker, type FrameKind, type Marker } from './scenario.js';

export interface ReceivedFrame extends Marker {
  /** Epoch milliseconds when it was read. */
  t: number;
  /** Ethernet source MAC. */
  src: string;
}

export interface FrameFilter {
  kind?: FrameKind | readonly FrameKind[];
  tag?: number | readonly number[];
  step?: number | readonly number[];
  /** Epoch ms, inclusive. */
  since?: number;
  /** Epoch ms, exclusive. */
  until?: number;
}

function macAt(f: Uint8Array, o: number): string {
  return Array.from(f.subarray(o, o + 6), (b) => b.toString(16).padStart(2, '0')).join(':');
}

function oneOf<T>(v: T, want: T | readonly T[] | undefined): boolean {
  return want === undefined || (Array.isArray(want) ? (want as readonly T[]).includes(v) : v === want);
}

export class FrameCounter {
  private readonly received: ReceivedFrame[] = [];
  private stopping = false;
  private readonly loop: Promise<void>;
  /** Frames without a marker (the peer's other traffic). */
  unmarked = 0;
  /** Why reading ended early, if it did. */
  ended: string | undefined;

  private constructor(
    readonly endpoint: Endpoint,
    private readonly sock: PacketSocket,
    readonly startedAt: number,
    private readonly maxMs: number,
    private readonly maxFrames: number,
  ) {
    this.loop = this.run();
  }

  /** Starts counting at `endpoint` (a namespace's interface). Default bounds: 15 minutes, 2 M marked frames. */
  static start(endpoint: Endpoint, opts: { maxMs?: number; maxFrames?: number } = {}): FrameCounter {
    const sock = PacketSocket.open(endpoint.ns, endpoint.ifname);
    return new FrameCounter(endpoint, sock, Date.now(), opts.maxMs ?? 15 * 60_000, opts.maxFrames ?? 2_000_000);
  }

  private async run(): Promise<void> {
    const deadline = performance.now() + this.maxMs;
    // Bounded: at most one pass per ms of maxMs (each pass waits up to 200 ms or returns with frames).
    for (let guard = 0; guard < this.maxMs + 1000; guard++) {
      if (this.stopping) return;
      if (performance.now() >= deadline) {
        this.ended = `time bound of ${this.maxMs} ms reached`;
        return;
      }
      const frames = await this.sock.receive({ timeoutMs: 200, quietMs: 1 });
      const t = Date.now();
      for (const f of frames) {
        const m = parseMarker(f);
        if (!m) {
          this.unmarked++;
          continue;
        }
        if (this.received.length >= this.maxFrames) {
          this.ended = `frame bound of ${this.maxFrames} reached`;
          return;
        }
        this.received.push({ ...m, t, src: macAt(f, 6) });
      }
    }
  }

  /** The marked frames received so far that match `f`. */
  frames(f: FrameFilter = {}): ReceivedFrame[] {
    return this.received.filter((r) => oneOf(r.kind, f.kind) && oneOf(r.tag, f.tag) && oneOf(r.step, f.step) && (f.since === undefined || r.t >= f.since) && (f.until === undefined || r.t < f.until));
  }

  count(f: FrameFilter = {}): number {
    return this.frames(f).length;
  }

  /** Counts per kind (every kind present, 0 when none arrived). */
  counts(f: Omit<FrameFilter, 'kind'> = {}): Record<FrameKind, number> {
    const out = Object.fromEntries(FRAME_KINDS.map((k) => [k, 0])) as Record<FrameKind, number>;
    for (const r of this.frames(f)) out[r.kind]++;
    return out;
  }

  /** Waits (bounded) until `count(f) >= n`; returns the count reached. */
  async waitFor(f: FrameFilter, n: number, timeoutMs: number): Promise<number> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const c = this.count(f);
      if (c >= n || performance.now() >= deadline || this.ended !== undefined) return c;
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Stops reading and closes the socket. Idempotent. */
  async stop(): Promise<void> {
    this.stopping = true;
    await this.loop.catch(() => undefined);
    await this.sock.closeAsync();
  }
}
