// One bad VM never unprotects another (issue 10 item 4): a host with 10 good
// bindings and one broken binding of each kind (a missing variable, a
// construct the backend refuses, CTRL_IP_LEARNING=none without an IP, an
// invalid CTRL_IP_LEARNING) is compiled with --partial and loaded through the
// CLI, for the nft and the both backends. Through a real bridge: the 10 pass
// valid traffic and drop spoofed traffic; every broken port drops everything,
// both ways, counted as unprotected; `status` names the port, the code and
// the reason; compile and load exit 5 (partial). The same through the live
// host's load (the desired state read from /run/libvirt).
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { withNetns } from '../../src/host/netns.js';
import { DEFAULT_CONFIG } from '../../src/host/config.js';
import { LiveHost } from '../../src/host/live/host.js';
import { observeRunDir } from '../../src/host/live/observe.js';
import { deliver } from '../../src/lab/packet-io.js';
import { canonicalFrame } from '../../src/lab/packet-io.js';
import { createTestbed, type Testbed } from '../../src/lab/testbed.js';
import * as F from '../../src/lab/frames/build.js';
import { EXIT } from '../../src/util/errors.js';
import { run } from '../support/cli.js';
import { bindingXml } from '../support/policy.js';
import { isRoot, ROOT_REASON } from './support/differential.js';

const GOOD = 10;
const PEER_MAC = '52:54:00:00:01:99';
const PEER_IP = '10.78.0.254';
const mac = (i: number): string => `52:54:00:00:01:${i.toString(16).padStart(2, '0')}`;
const ip = (i: number): string => `10.78.0.${10 + i}`;

/** The broken ports: tap index, filter, parameters, the code their port fails with. */
const BROKEN: { i: number; kind: string; filter: string; params: Record<string, string>; code: string }[] = [
  { i: GOOD, kind: 'missing variable', filter: 'needs-var', params: { IP: ip(GOOD) }, code: 'NWF1203' },
  { i: GOOD + 1, kind: 'refused construct', filter: 'tcp-option', params: { IP: ip(GOOD + 1) }, code: 'NWF1402' },
  { i: GOOD + 2, kind: 'CTRL_IP_LEARNING=none', filter: 'clean-traffic', params: { CTRL_IP_LEARNING: 'none' }, code: 'NWF1206' },
  { i: GOOD + 3, kind: 'invalid CTRL_IP_LEARNING', filter: 'clean-traffic', params: { CTRL_IP_LEARNING: 'sometimes' }, code: 'NWF1215' },
];
const FILTERS = {
  'needs-var.xml': `<filter name='needs-var' chain='root'><filterref filter='clean-traffic'/><rule action='accept' direction='out'><ip dstipaddr='$NOPE'/></rule></filter>`,
  // nft has no TCP option match: refused by nft and under both (eBPF leaves L3 to nft)
  'tcp-option.xml': `<filter name='tcp-option' chain='root'><filterref filter='clean-traffic'/><rule action='drop' direction='in'><tcp option='8'/></rule></filter>`,
};

describe.skipIf(!isRoot)('partial loads: one broken binding per kind fails closed, the 10 others are protected', () => {
  let tb: Testbed;
  let work: string;
  const pinDir = `/sys/fs/bpf/nwf-fast-partial-${process.pid}`;

  beforeAll(async () => {
    const n = GOOD + BROKEN.length;
    tb = await createTestbed({
      prefix: 'nwfpl',
      vms: Array.from({ length: n }, (_, i) => ({ name: `vm${i}`, tap: `vnet${i}`, mac: mac(i) })),
      peers: [{ name: 'peer', mac: PEER_MAC }],
    });
    for (const port of [...tb.vms.map((v) => `vnet${v.name.slice(2)}`), tb.guest('peer').port]) {
      await execa('ip', ['netns', 'exec', tb.hostNs, 'bridge', 'link', 'set', 'dev', port, 'learning', 'off', 'flood', 'on']);
    }
    work = mkdtempSync(join(tmpdir(), 'nwf-partial-'));
    const b = join(work, 'bindings');
    const f = join(work, 'filters');
    mkdirSync(b);
    mkdirSync(f);
    for (let i = 0; i < GOOD; i++) writeFileSync(join(b, `vnet${i}.xml`), bindingXml(`vnet${i}`, mac(i), 'clean-traffic', { IP: ip(i) }));
    for (const x of BROKEN) writeFileSync(join(b, `vnet${x.i}.xml`), bindingXml(`vnet${x.i}`, mac(x.i), x.filter, x.params));
    for (const [name, text] of Object.entries(FILTERS)) writeFileSync(join(f, name), text);
  });
  afterAll(async () => {
    await tb?.destroy();
    if (work) rmSync(work, { recursive: true, force: true });
    rmSync(pinDir, { recursive: true, force: true });
  });

  const udp = (i: number, srcIp: string, toVm = false): Uint8Array =>
    toVm
      ? F.udpFrame({ srcMac: PEER_MAC, dstMac: mac(i), srcIp: PEER_IP, dstIp: ip(i), sport: 7000, dport: 7001 + i })
      : F.udpFrame({ srcMac: mac(i), dstMac: PEER_MAC, srcIp, dstIp: PEER_IP, sport: 7000 + i, dport: 7001 });
  const send = async (i: number, frame: Uint8Array, toVm: boolean): Promise<boolean> => {
    const vm = tb.guest(`vm${i}`).endpoint;
    const peer = tb.guest('peer').endpoint;
    const r = await deliver(toVm ? peer : vm, toVm ? vm : peer, [frame], { key: canonicalFrame, quietMs: 40, maxWaitMs: 1000 });
    return r.arrived[0] as boolean;
  };

  /** The 10 good ports pass valid traffic and drop spoofed traffic, the broken ones drop everything; status (CLI, text and JSON) says so. */
  const checkHost = async (what: string, host: string[]): Promise<void> => {
    let goodPassed = 0;
    let spoofDropped = 0;
    for (let i = 0; i < GOOD; i++) {
      if (await send(i, udp(i, ip(i)), false)) goodPassed++;
      if (await send(i, udp(i, ip(i), true), true)) goodPassed++;
      if (!(await send(i, udp(i, '10.78.0.66'), false))) spoofDropped++;
    }
    let brokenDelivered = 0;
    for (const x of BROKEN) {
      if (await send(x.i, udp(x.i, ip(x.i)), false)) brokenDelivered++;
      if (await send(x.i, udp(x.i, ip(x.i), true), true)) brokenDelivered++;
    }
    console.log(`[partial ${what}] good: ${goodPassed}/${2 * GOOD} valid delivered, ${spoofDropped}/${GOOD} spoofed dropped; broken: ${brokenDelivered}/${2 * BROKEN.length} delivered`);
    expect(goodPassed).toBe(2 * GOOD);
    expect(spoofDropped).toBe(GOOD);
    expect(brokenDelivered).toBe(0);

    const sj = await withNetns(tb.hostNs, () => run(['status', '--json', ...host]));
    const st = JSON.parse(sj.out) as { health: string; problems: string[]; interfaces: { iface: string; status: string; error?: { code: string; message: string }; drops: Record<string, number> }[] };
    // a port that fails closed is not health: status says so and exits 3
    expect(sj.code).toBe(EXIT.drift);
    expect(st.health).toBe('unprotected');
    for (const x of BROKEN) expect(st.problems.some((q) => q.includes(`vnet${x.i}`) && q.includes(x.code)), x.kind).toBe(true);
    for (const x of BROKEN) {
      const p = st.interfaces.find((q) => q.iface === `vnet${x.i}`);
      expect(p?.status, x.kind).toBe('failed');
      expect(p?.error?.code, x.kind).toBe(x.code);
      expect(p?.error?.message.length, x.kind).toBeGreaterThan(10);
      expect(p?.drops.unprotected ?? 0, x.kind).toBeGreaterThanOrEqual(2);
    }
    expect(st.interfaces.filter((q) => q.status === 'protected').map((q) => q.iface).sort()).toEqual(Array.from({ length: GOOD }, (_, i) => `vnet${i}`).sort());
    const text = await withNetns(tb.hostNs, () => run(['status', ...host]));
    for (const x of BROKEN) expect(text.out).toMatch(new RegExp(`vnet${x.i} .*UNPROTECTED \\(dropped\\): error ${x.code}: `));
  };

  it.each(['nft', 'both'] as const)('%s: compile and load exit 5; the 10 are protected, each broken port drops everything; status says so', async (backend) => {
    const state = join(work, `state-${backend}`);
    const gen = join(work, `gen-${backend}`);
    const c = await run(['compile', '--filters', join(work, 'filters'), '--binding', join(work, 'bindings'), '--backend', backend, '--partial', '--out', gen]);
    expect(c.code, c.err).toBe(EXIT.partial);
    for (const x of BROKEN) expect(c.err).toMatch(new RegExp(`error ${x.code}: [^\\n]*\\n  interface: vnet${x.i} \\(unprotected`));
    expect(c.err).toContain(`partial: ${BROKEN.length} interface(s) fail closed`);
    // without --partial the same sources fail as a whole (exit 2), nothing written
    expect((await run(['compile', '--filters', join(work, 'filters'), '--binding', join(work, 'bindings'), '--backend', backend, '--out', join(work, `whole-${backend}`)])).code).toBe(EXIT.badInput);

    const host = ['--state-dir', state, '--pin-dir', pinDir];
    const l = await withNetns(tb.hostNs, () => run(['load', gen, ...host]));
    expect(l.code, l.err).toBe(EXIT.partial);
    expect(l.out).toMatch(new RegExp(`\\(${GOOD} interface\\(s\\)\\)`));
    for (const x of BROKEN) expect(l.err).toContain(`interface: vnet${x.i} (unprotected: its traffic is dropped)`);

    await checkHost(backend, host);
    expect((await withNetns(tb.hostNs, () => run(['unload', ...host]))).code).toBe(0);
  });
  it('load of the live host (the desired state from /run/libvirt): the broken ports are loaded failing closed, not skipped, and reported', async () => {
    const root = join(work, 'root');
    const bdir = join(root, 'run', 'libvirt', 'nwfilter-binding');
    mkdirSync(bdir, { recursive: true });
    for (const f of readdirSync(join(work, 'bindings'))) copyFileSync(join(work, 'bindings', f), join(bdir, f));
    const stateDir = join(work, 'state-live');
    const live = new LiveHost({
      config: { ...DEFAULT_CONFIG, mode: 'native', backend: 'nft', bridges: [], tapPatterns: ['vnet*'], stateDir, pinDir },
      netns: tb.hostNs,
      inProcess: true,
      filterDirs: [join(work, 'filters')],
    });
    const r = await live.locked('load (test)', () => live.resync(observeRunDir({ root }), { partial: true, allowEmpty: false, force: true }));
    expect((r.apply?.failed ?? []).map((f) => [f.iface, f.code]).sort()).toEqual(BROKEN.map((x) => [`vnet${x.i}`, x.code]).sort());
    expect(r.added.length).toBe(GOOD + BROKEN.length);
    await checkHost('live', ['--state-dir', stateDir, '--pin-dir', pinDir]);
    expect((await withNetns(tb.hostNs, () => run(['unload', '--state-dir', stateDir, '--pin-dir', pinDir]))).code).toBe(0);
  });
});

if (!isRoot) console.warn(`SKIP partial-load tests: ${ROOT_REASON}`);
