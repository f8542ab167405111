import { describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.js';
import { toHex } from '../../src/frames/bytes.js';
import * as F from '../../src/lab/frames/build.js';
import { bindingXml, tempDir } from '../support/policy.js';

async function run(argv: string[]) {
  let out = '';
  let err = '';
  const code = await main(argv, { out: (s) => void (out += s), err: (s) => void (err += s) });
  return { code, out, err };
}

describe('nwf-fast explain', () => {
  const bdir = tempDir({ 'vnet0.xml': bindingXml('vnet0', '52:54:00:00:00:01', 'clean-traffic', { IP: '10.0.0.2' }) });
  const spoofed = toHex(F.udpFrame({ srcMac: '52:54:00:00:00:01', dstMac: '52:54:00:00:00:02', srcIp: '10.0.0.66', dstIp: '10.0.0.3', sport: 1, dport: 2 }));
  const good = toHex(F.udpFrame({ srcMac: '52:54:00:00:00:01', dstMac: '52:54:00:00:00:02', srcIp: '10.0.0.2', dstIp: '10.0.0.3', sport: 1, dport: 2 }));

  it('--json gives the verdict and the deciding trace', async () => {
    const r = await run(['explain', '--binding', bdir, '--iface', 'vnet0', '--direction', 'out', '--frame', spoofed, '--json']);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.out);
    expect(j.verdict).toBe('drop');
    expect(j.reason).toBe('ip-spoof');
    expect(j.trace.at(-1)).toMatchObject({ chain: 'I-vnet0-ipv4-ip', ruleId: 'no-ip-spoofing/3', verdict: 'drop' });
  });

  it('text output names the verdict and the rules', async () => {
    const r = await run(['explain', '--binding', bdir, '--iface', 'vnet0', '--direction', 'out', '--frame', good]);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^ACCEPT/);
    expect(r.out).toContain('clean-traffic/1');
  });

  it('refuses bad frames, directions and unknown interfaces', async () => {
    expect((await run(['explain', '--binding', bdir, '--iface', 'vnet0', '--direction', 'out', '--frame', 'xyz'])).err).toContain('NWF1302');
    expect((await run(['explain', '--binding', bdir, '--iface', 'vnet0', '--direction', 'up', '--frame', good])).code).toBe(2);
    expect((await run(['explain', '--binding', bdir, '--iface', 'vnet9', '--direction', 'out', '--frame', good])).err).toContain('NWF1209');
  });
});
