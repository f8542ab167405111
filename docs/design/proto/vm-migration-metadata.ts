// Learned addresses across a live migration, with real QEMU guests under
// real libvirt (src/lab/vm): two namespace hosts A and B with private
// libvirtds and recording qemu hooks, a peer counting what arrives.
//
// 1. A guest on A has clean-traffic WITHOUT an IP (libvirt learns, `any`):
//    it sends legitimate UDP first (A learns its address), then a paced flood
//    of every frame kind (legitimate and spoofed).
// 2. On A, `virsh metadata --live` writes the learned address into the
//    domain's live XML under nwf-fast's namespace (what `nwf-fast reconcile`
//    will do).
// 3. `virsh migrate --live` to B. Checked: B's `migrate begin` and
//    `start begin` hooks receive the XML WITH that metadata (start begin also
//    with the <target dev> of the taps), so a hook on B can lock the port
//    before the guest resumes; and B's live XML still has it.
// 4. Observed (libvirt's own behaviour, the window of issue 10): on B libvirt
//    learns again from scratch; spoofed frames of the flood reach the peer
//    through B after the migration.
//
// Run (root, QEMU, the cloud kernel, busybox-static, gcc):
//   npx tsx docs/design/proto/vm-migration-metadata.ts
// About a minute; everything is removed at the end.
import { destroyStale } from '../../../src/lab/testbed.js';
import { VmGuest } from '../../../src/lab/vm/guest.js';
import { describeHookXml } from '../../../src/lab/vm/hooks.js';
import { createVmLab, type VmHost, type VmLab } from '../../../src/lab/vm/host.js';
import { guestImage, vmAvailable } from '../../../src/lab/vm/image.js';
import { FrameCounter } from '../../../src/lab/vm/peer.js';
import { SPOOFED_KINDS, tagOf } from '../../../src/lab/vm/scenario.js';

const NS = 'urn:x-nwf-fast:metadata:1';
const PEER = { mac: '52:54:00:72:00:01', ipv4: '10.72.0.1' };
const NIC = { mac: '52:54:00:72:00:11', ip: '10.72.0.11' };
const T0 = tagOf(1, 0);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

let failures = 0;
function check(what: string, ok: boolean, detail = ''): void {
  if (!ok) failures++;
  console.log(`${ok ? 'ok      ' : 'MISMATCH'} ${what}${detail ? `: ${detail}` : ''}`);
}

/** The learned IPv4 sources in libvirt's ebtables rules for a tap. */
function learnedIps(ebtables: string, tap: string): string[] {
  return [...ebtables.matchAll(new RegExp(`-A I-${tap}-ipv4-ip -p IPv4 --ip-src (\\d+\\.\\d+\\.\\d+\\.\\d+) -j RETURN`, 'g'))].map((m) => m[1] as string).filter((ip) => ip !== '0.0.0.0');
}

async function waitLearned(h: VmHost, tap: string, ms: number): Promise<string[]> {
  const end = Date.now() + ms;
  for (;;) {
    const ips = learnedIps(await h.ebtablesSave(), tap);
    if (ips.length || Date.now() > end) return ips;
    await sleep(200);
  }
}

async function main(): Promise<void> {
  const avail = vmAvailable();
  if (!avail.ok) {
    console.log(`skipped: ${avail.reason}`);
    return;
  }
  await destroyStale('lrnvm');
  const image = await guestImage();
  let lab: VmLab | undefined;
  let vm: VmGuest | undefined;
  let peer: FrameCounter | undefined;
  try {
    lab = await createVmLab({ prefix: 'lrnvm', hosts: [{ name: 'a' }, { name: 'b' }], peer: { mac: PEER.mac, ipv4: `${PEER.ipv4}/24` } });
    const [A, B] = lab.hosts as [VmHost, VmHost];
    peer = FrameCounter.start(lab.peer.endpoint, { maxMs: 5 * 60_000 });
    vm = await VmGuest.start(
      A,
      {
        name: 'vm1',
        tag: 1,
        nics: [{ mac: NIC.mac, ipv4: `${NIC.ip}/24`, filterref: { filter: 'clean-traffic' } }],
        peer: PEER,
        steps: [
          { nic: 0, send: { kinds: ['udp'], count: 5 } },
          { nic: 0, send: { kinds: 'all', pps: 90, seconds: 200 } },
        ],
        lifetimeS: 240,
      },
      image,
    );
    await vm.waitConsole(/NWF step nic=0 n=1 end rc=0/, 90_000);
    const tapA = (await vm.taps()).get(NIC.mac) as string;
    const onA = await waitLearned(A, tapA, 10_000);
    check('A learned the guest address from its first UDP frame', onA.join() === NIC.ip, onA.join());
    await sleep(3000);
    const spoofedOnA = peer.count({ tag: T0, kind: SPOOFED_KINDS });
    console.log(`spoofed frames delivered on A since the guest started (libvirt's learning window on A): ${spoofedOnA}`);

    // What reconcile will write: learned addresses in nwf-fast's metadata, live XML only.
    const learned = `<filters><learned mac='${NIC.mac}' mode='any'><ip address='${onA[0]}' since='${new Date().toISOString()}'/></learned></filters>`;
    const set = await A.libvirtd.virsh(['metadata', 'vm1', '--uri', NS, '--key', 'nwf', '--set', learned, '--live'], { check: false });
    check('virsh metadata --live --set on A', set.exitCode === 0, set.stderr.trim());
    const liveA = await vm.dumpXml();
    check("A's live XML has the metadata", liveA.includes(NS) && liveA.includes(`address='${onA[0]}'`) || liveA.includes(`address="${onA[0]}"`));
    const get = await A.libvirtd.virsh(['metadata', 'vm1', '--uri', NS, '--live'], { check: false });
    console.log(`virsh metadata --live (get) on A:\n${get.stdout.trim()}`);

    const t = Date.now();
    const ms = await vm.migrate(B);
    console.log(`migration A -> B: ${ms.toFixed(0)} ms`);
    const calls = B.hookCalls().filter((c) => c.domain === 'vm1');
    const mig = calls.find((c) => c.op === 'migrate' && c.subop === 'begin');
    const start = calls.find((c) => c.op === 'start' && c.subop === 'begin');
    console.log(`B hook calls: ${calls.map((c) => `${c.op} ${c.subop}`).join(', ')}`);
    const has = (xml: string | undefined): boolean => !!xml && xml.includes(NS) && new RegExp(`address=['"]${onA[0]?.replace(/\./g, '\\.')}['"]`).test(xml);
    check("B's migrate begin XML carries nwf-fast's metadata with the learned address", has(mig?.stdin));
    check("B's migrate begin XML has no <target dev>", mig !== undefined && describeHookXml(mig.stdin).targetDevs.length === 0, JSON.stringify(mig ? describeHookXml(mig.stdin) : null));
    check("B's start begin XML carries nwf-fast's metadata with the learned address", has(start?.stdin));
    check("B's start begin XML names the tap (<target dev>)", start !== undefined && describeHookXml(start.stdin).targetDevs.length === 1, JSON.stringify(start ? describeHookXml(start.stdin) : null));
    const metaStart = start?.stdin.match(/<metadata>[\s\S]*?<\/metadata>/)?.[0];
    console.log(`metadata as B's start begin hook receives it:\n${metaStart ?? '(none)'}`);
    const state = await vm.state();
    check('the guest runs on B after the migration', state === 'running', state || '(no domain)');
    if (state !== 'running') {
      console.log(`B's console:\n${vm.console().slice(-1500)}`);
      return;
    }
    check("B's live XML keeps the metadata", has(await vm.dumpXml()));

    const tapB = (await vm.taps()).get(NIC.mac) as string;
    await sleep(6000);
    const onB = learnedIps(await B.ebtablesSave(), tapB);
    const byKind = peer.counts({ tag: T0, since: t });
    const spoofedAfter = Object.fromEntries(SPOOFED_KINDS.map((k) => [k, byKind[k]]));
    const total = SPOOFED_KINDS.reduce((a, k) => a + byKind[k], 0);
    console.log(`legitimate UDP delivered since the migration started: ${byKind.udp}`);
    console.log(`libvirt on B learned: ${onB.join(',') || '(nothing yet)'}; spoofed frames delivered since the migration started: ${total} ${JSON.stringify(spoofedAfter)}`);
    check('observed: libvirt relearns on B (no address carried over)', true, `B learned ${onB.join(',') || 'nothing'}`);
  } finally {
    await vm?.destroy().catch(() => undefined);
    await peer?.stop();
    await lab?.destroy();
  }
  console.log(failures ? `${failures} check(s) failed` : 'all checks hold');
  process.exitCode = failures ? 1 : 0;
}

await main();
