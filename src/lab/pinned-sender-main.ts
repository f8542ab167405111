// The child process of PinnedSender (pinned-sender.ts), started with
// `taskset -c N`. Commands on stdin, one per line, answers on stdout:
//   go START_EPOCH_MS COUNT SRC_IP SALT   busy-waits until START, sends COUNT
//                                         UDP frames from SRC_IP tagged
//                                         frameTag(i, SALT); answers "done N"
//   quit
// Arguments: NS IFNAME SRC_MAC DST_MAC DST_IP. Bounded: COUNT <= 100000, a
// start at most 10 s ahead, and the process ends when stdin closes.
import { createInterface } from 'node:readline';
import { frameTag, PacketSocket } from './packet-io.js';
import { udpFrame } from './frames/build.js';

const [ns, ifname, srcMac, dstMac, dstIp] = process.argv.slice(2) as [string, string, string, string, string];
const sock = PacketSocket.open(ns, ifname, { receive: false });
try {
  for await (const line of createInterface({ input: process.stdin })) {
    const [cmd, start, count, srcIp, salt] = line.trim().split(/\s+/);
    if (cmd === 'quit') break;
    if (cmd !== 'go' || !srcIp) continue;
    const n = Math.min(Number(count), 100_000);
    const at = Math.min(Number(start), Date.now() + 10_000);
    const frames = Array.from({ length: n }, (_, i) => udpFrame({ srcMac, dstMac, srcIp, dstIp, sport: 5000, dport: 6000, payload: frameTag(i, Number(salt)) }));
    while (Date.now() < at) {
      // busy-wait: both senders leave this loop within microseconds of each other
    }
    let sent = 0;
    for (const f of frames) if (sock.trySend(f)) sent++;
    process.stdout.write(`done ${sent}\n`);
  }
} finally {
  sock.close();
}
