// A frame sender pinned to one CPU, for race tests: two of them send frames
// with different source addresses from the same VM at the same instant, so
// the kernel processes their first frames on two CPUs at once (a veth
// delivers on the sending CPU). The child is pinned-sender-main.ts.
import { execa, type ResultPromise } from 'execa';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { PacketSocket, type Endpoint } from './packet-io.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class PinnedSender {
  private readonly lines: string[] = [];
  private readonly waiters: ((l: string) => void)[] = [];

  private constructor(private readonly proc: ResultPromise) {
    const rl = createInterface({ input: proc.stdout as NodeJS.ReadableStream });
    rl.on('line', (l) => {
      const w = this.waiters.shift();
      if (w) w(l);
      else this.lines.push(l);
    });
  }

  /** A sender on CPU `cpu` from `ep`, frames (srcMac -> dstMac, dstIp). Bounded: the child ends after 10 minutes. */
  static start(cpu: number, ep: Endpoint, srcMac: string, dstMac: string, dstIp: string): PinnedSender {
    // the child is TypeScript under the test runner (tsx), JavaScript once built
    const ts = import.meta.url.endsWith('.ts');
    const script = fileURLToPath(new URL(`./pinned-sender-main.${ts ? 'ts' : 'js'}`, import.meta.url));
    const node = ts ? [process.execPath, '--import', 'tsx', script] : [process.execPath, script];
    const proc = execa('taskset', ['-c', String(cpu), ...node, ep.ns, ep.ifname, srcMac, dstMac, dstIp], { stdin: 'pipe', reject: false, cleanup: true, timeout: 10 * 60_000 });
    return new PinnedSender(proc);
  }

  private next(timeoutMs: number): Promise<string> {
    const l = this.lines.shift();
    if (l !== undefined) return Promise.resolve(l);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`sender: no answer within ${timeoutMs} ms`)), timeoutMs);
      this.waiters.push((x) => {
        clearTimeout(t);
        resolve(x);
      });
    });
  }

  /** Sends `count` frames from `srcIp` starting at epoch ms `at`; resolves with how many were sent. */
  async go(at: number, count: number, srcIp: string, salt: number): Promise<number> {
    this.proc.stdin?.write(`go ${at} ${count} ${srcIp} ${salt}\n`);
    const l = await this.next(20_000 + Math.max(0, at - Date.now()));
    return Number(l.split(' ')[1]);
  }

  async stop(): Promise<void> {
    this.proc.stdin?.write('quit\n');
    this.proc.stdin?.end();
    await Promise.race([this.proc, sleep(3000)]);
    if (this.proc.exitCode === null) this.proc.kill('SIGKILL');
  }
}

/**
 * One race trial: both senders send `count` frames at the same instant (400
 * ms from now), from `ips[0]` (salt 1) and `ips[1]` (salt 2); how many of
 * each reached `rx`.
 */
export async function raceTrial(s: readonly [PinnedSender, PinnedSender], rx: PacketSocket, ips: readonly [string, string], count = 300): Promise<{ sent: [number, number]; got: [number, number] }> {
  rx.drain();
  const at = Date.now() + 400;
  const sent = (await Promise.all([s[0].go(at, count, ips[0], 1), s[1].go(at, count, ips[1], 2)])) as [number, number];
  await sleep(150);
  const got: [number, number] = [0, 0];
  for (const f of rx.receiveNow()) {
    const t = Buffer.from(f).toString('latin1');
    if (t.includes('NW\u0000\u0001')) got[0]++;
    else if (t.includes('NW\u0000\u0002')) got[1]++;
  }
  return { sent, got };
}
