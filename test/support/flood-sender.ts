// A frame sender in its own process (so it keeps sending while the test's
// process is busy in synchronous work): sends UDP frames tagged spoofed (1) or
// legitimate (2) from eth0 of namespace NS at about PPS frames/s until stdin
// closes, SIGTERM, or MAX_S seconds; prints `ready`, then how many it has
// sent every 100 ms and at the end.
//   flood-sender NS SRC_MAC SRC_IP DST_MAC DST_IP SALT PPS MAX_S
import { frameTag, PacketSocket } from '../../src/lab/packet-io.js';
import * as F from '../../src/lab/frames/build.js';

const [ns, srcMac, srcIp, dstMac, dstIp, salt, pps, maxS] = process.argv.slice(2) as string[];
const sock = PacketSocket.open(ns as string, 'eth0', { receive: false });
let sent = 0;
let stop = false;
const end = (): void => {
  stop = true;
};
process.stdin.on('end', end);
process.stdin.resume();
process.on('SIGTERM', end);
process.stdout.write('ready\n');
let shown = performance.now();
const deadline = Date.now() + Number(maxS) * 1000;
const every = 1000 / Number(pps);
const t0 = performance.now();
while (!stop && Date.now() < deadline) {
  const due = Math.floor((performance.now() - t0) / every);
  for (; sent < due && sent < 1_000_000; sent++) {
    sock.trySend(F.udpFrame({ srcMac: srcMac as string, dstMac: dstMac as string, srcIp: srcIp as string, dstIp: dstIp as string, sport: 5000, dport: 6000, payload: frameTag(sent, Number(salt)) }));
  }
  if (performance.now() - shown > 100) {
    process.stdout.write(`${sent}\n`);
    shown = performance.now();
  }
  await new Promise((r) => setTimeout(r, 2));
}
sock.close();
process.stdout.write(`${sent}\n`);
process.exit(0);
