// DHCP parsing for IP learning (design 5.5): the same message cases as the
// eBPF parser's (options anywhere, PAD, bounds, cut messages).
import { describe, expect, it } from 'vitest';
import { parseDhcp, releasedLease, teachingLease } from '../../src/host/learn/dhcp.js';
import { DHCP, dhcpPayload, fillerOptions, type DhcpMessage } from '../../src/lab/frames/dhcp.js';
import { ipv4 } from '../../src/lab/frames/build.js';

const VM = '52:54:00:00:00:03';
const ack = (o: Partial<DhcpMessage> = {}): DhcpMessage => ({ op: 2, yiaddr: '10.77.0.2', chaddr: VM, type: DHCP.ACK, leaseSeconds: 60, leading: [{ code: 54, value: ipv4('10.77.0.1') }], ...o });
const teaches = (m: DhcpMessage | Uint8Array) => teachingLease(parseDhcp(m instanceof Uint8Array ? m : dhcpPayload(m)), VM);

describe('DHCP parsing (learning)', () => {
  it('an ACK teaches yiaddr and its lease: 53 first, after long options (past byte 255 of the UDP payload), after PAD, infinite', () => {
    expect(teaches(ack())).toEqual({ ip: '10.77.0.2', seconds: 60 });
    expect(teaches(ack({ leading: fillerOptions(6) }))).toEqual({ ip: '10.77.0.2', seconds: 60 });
    expect(teaches(ack({ padAfterMagic: 3 }))).toEqual({ ip: '10.77.0.2', seconds: 60 });
    expect(teaches(ack({ leaseSeconds: 0xffffffff }))).toEqual({ ip: '10.77.0.2', seconds: 0xffffffff });
    expect(parseDhcp(dhcpPayload(ack()))?.serverId).toBe('10.77.0.1');
  });

  it('teaches nothing: no lease time, OFFER, NAK, another chaddr, yiaddr 0, a request', () => {
    expect(teaches(ack({ leaseSeconds: undefined }))).toBeUndefined();
    expect(teaches(ack({ leaseSeconds: 0 }))).toBeUndefined();
    expect(teaches(ack({ type: DHCP.OFFER }))).toBeUndefined();
    expect(teaches(ack({ type: DHCP.NAK }))).toBeUndefined();
    expect(teaches(ack({ chaddr: '52:54:00:00:00:04' }))).toBeUndefined();
    expect(teaches(ack({ yiaddr: '0.0.0.0' }))).toBeUndefined();
    expect(teaches(ack({ op: 1 }))).toBeUndefined();
  });

  it('refuses malformed messages: no END, over the option bound, cut inside 51, a second 53, a 51 of another length, no magic', () => {
    expect(teaches(ack({ noEnd: true }))).toBeUndefined();
    expect(teaches(ack({ leading: fillerOptions(70, 2) }))).toBeUndefined();
    const whole = dhcpPayload(ack());
    const at51 = whole.indexOf(51, 240);
    expect(teaches(whole.subarray(0, at51 + 4))).toBeUndefined();
    expect(teaches(ack({ leading: [{ code: 53, value: Uint8Array.of(5) }] }))).toBeUndefined();
    expect(teaches(ack({ leading: [{ code: 51, value: Uint8Array.of(0, 0, 60) }] }))).toBeUndefined();
    const noMagic = whole.slice();
    noMagic[236] = 0;
    expect(teaches(noMagic)).toBeUndefined();
    expect(parseDhcp(whole.subarray(0, 200))).toBeUndefined();
  });

  it('a RELEASE ends the lease in ciaddr (not yiaddr)', () => {
    const rel = parseDhcp(dhcpPayload({ op: 1, ciaddr: '10.77.0.2', chaddr: VM, type: DHCP.RELEASE }));
    expect(releasedLease(rel, VM)).toBe('10.77.0.2');
    expect(releasedLease(parseDhcp(dhcpPayload({ op: 1, yiaddr: '10.77.0.2', chaddr: VM, type: DHCP.RELEASE })), VM)).toBeUndefined();
  });
});
