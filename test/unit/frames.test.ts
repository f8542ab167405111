import { describe, expect, it } from 'vitest';
import {
  ArpOp,
  EtherType,
  IpProto,
  MIN_FRAME_LEN,
  arp,
  arpFrame,
  bpdu,
  concat,
  ether,
  formatIpv4,
  formatMac,
  fromHex,
  icmpFrame,
  icmpv4,
  icmpv6,
  icmpv6Frame,
  ieee8023,
  internetChecksum,
  ipv4,
  ipv4Packet,
  ipv6,
  ipv6Packet,
  ipv6TcpFrame,
  ipv6UdpFrame,
  mac,
  onesComplementSum,
  pseudoHeader,
  rarpAnnounceFrame,
  rarpFrame,
  stpBpdu,
  tcp,
  tcpFlags,
  tcpFrame,
  toHex,
  udp,
  udpFrame,
} from '../../src/lab/frames/build.js';
import { NwfError } from '../../src/util/errors.js';

const M1 = '52:54:00:00:00:01';
const M2 = '52:54:00:00:00:02';
const text = (s: string) => new TextEncoder().encode(s);
const be16 = (b: Uint8Array, off: number) => (b[off]! << 8) | b[off + 1]!;
const slice = (b: Uint8Array, from: number, len: number) => toHex(b.subarray(from, from + len));

// Reference values below were derived outside this code base: the IPv4 header
// is the textbook example (checksum 0xb861), the others were recomputed with a
// separate script and checked by `tcpdump -vv`, which verifies IP, UDP, TCP,
// ICMP and ICMPv6 checksums.

describe('address parsing', () => {
  it('parses MAC addresses', () => {
    expect(toHex(mac('52:54:00:AB:cd:0f'))).toBe('525400abcd0f');
    expect(toHex(mac('52-54-00-ab-cd-0f'))).toBe('525400abcd0f');
    expect(toHex(mac('2:4:0:a:b:c'))).toBe('020400' + '0a0b0c');
    expect(formatMac(mac(M1))).toBe(M1);
    for (const bad of ['', '52:54:00:00:00', '52:54:00:00:00:00:00', '52:54:00:00:00:0g', '525:4:00:00:00:00']) {
      expect(() => mac(bad), bad).toThrow(NwfError);
    }
    expect(() => mac(new Uint8Array(5))).toThrow(NwfError);
  });

  it('parses IPv4 addresses', () => {
    expect(Array.from(ipv4('192.0.2.255'))).toEqual([192, 0, 2, 255]);
    expect(formatIpv4(ipv4('10.1.2.3'))).toBe('10.1.2.3');
    for (const bad of ['', '1.2.3', '1.2.3.4.5', '256.0.0.1', '1.2.3.x', '1..2.3']) {
      expect(() => ipv4(bad), bad).toThrow(NwfError);
    }
  });

  it('parses IPv6 addresses in all text forms', () => {
    expect(toHex(ipv6('::'))).toBe('0'.repeat(32));
    expect(toHex(ipv6('::1'))).toBe('0'.repeat(30) + '01');
    expect(toHex(ipv6('fe80::'))).toBe('fe80' + '0'.repeat(28));
    expect(toHex(ipv6('ff02::1:2'))).toBe('ff02' + '0'.repeat(20) + '00010002');
    expect(toHex(ipv6('2001:db8:0:0:1:0:0:1'))).toBe('20010db8000000000001000000000001');
    expect(toHex(ipv6('2001:DB8::1:0:0:1'))).toBe('20010db8000000000001000000000001');
    expect(toHex(ipv6('::ffff:192.0.2.1'))).toBe('00000000000000000000ffffc0000201');
    for (const bad of ['', ':::', '1::2::3', '1:2:3:4:5:6:7', '1:2:3:4:5:6:7:8:9', '1:2:3:4::5:6:7:8', '12345::', 'g::', '1.2.3.4::']) {
      expect(() => ipv6(bad), bad).toThrow(NwfError);
    }
  });
});

describe('hex', () => {
  it('round trips', () => {
    const b = Uint8Array.from({ length: 256 }, (_, i) => i);
    expect(fromHex(toHex(b))).toEqual(b);
    expect(fromHex(toHex(b, ' '))).toEqual(b);
    expect(fromHex(toHex(b, ':'))).toEqual(b);
    expect(toHex(Uint8Array.of(0, 0xab, 0x0f), ':')).toBe('00:ab:0f');
  });

  it('accepts separators and a 0x prefix, rejects junk', () => {
    expect(toHex(fromHex(' 0xDE ad:be-ef.01\n02 '))).toBe('deadbeef0102');
    expect(fromHex('')).toEqual(new Uint8Array(0));
    expect(() => fromHex('abc')).toThrow(NwfError);
    expect(() => fromHex('zz')).toThrow(NwfError);
  });
});

describe('checksum arithmetic', () => {
  it('matches the RFC 1071 example', () => {
    // RFC 1071 section 3: words 0001 f203 f4f5 f6f7 sum to 0xddf2.
    const b = fromHex('00 01 f2 03 f4 f5 f6 f7');
    expect(onesComplementSum(b)).toBe(0xddf2);
    expect(internetChecksum(b)).toBe(0x220d);
  });

  it('treats odd-length parts as if concatenated', () => {
    const a = fromHex('01 02 03');
    const b = fromHex('04 05 06 07');
    expect(onesComplementSum(a, b)).toBe(onesComplementSum(concat(a, b)));
    expect(onesComplementSum(fromHex('ab'))).toBe(0xab00);
  });
});

describe('ether', () => {
  it('lays out dst, src, EtherType and pads to 60 bytes', () => {
    const f = ether({ dst: M2, src: M1, type: 0x0835, payload: fromHex('aa bb') });
    expect(f.length).toBe(MIN_FRAME_LEN);
    expect(slice(f, 0, 6)).toBe('525400000002');
    expect(slice(f, 6, 6)).toBe('525400000001');
    expect(be16(f, 12)).toBe(0x0835);
    expect(slice(f, 14, 2)).toBe('aabb');
    expect(f.subarray(16).every((x) => x === 0)).toBe(true);
  });

  it('does not pad with pad: false or when already long enough', () => {
    expect(ether({ dst: M2, src: M1, type: 0x0800, pad: false }).length).toBe(14);
    expect(ether({ dst: M2, src: M1, type: 0x0800, payload: new Uint8Array(3), pad: false }).length).toBe(17);
    expect(ether({ dst: M2, src: M1, type: 0x0800, payload: new Uint8Array(100) }).length).toBe(114);
    expect(ether({ dst: M2, src: M1, type: 0x0800, payload: new Uint8Array(46) }).length).toBe(60);
  });

  it('adds an 802.1Q tag', () => {
    const f = ether({ dst: M2, src: M1, type: EtherType.IPV4, vlan: { id: 100, pcp: 5, dei: true }, payload: fromHex('45') });
    expect(be16(f, 12)).toBe(0x8100);
    // TCI = pcp(3) | dei(1) | vid(12) = 101 1 000001100100
    expect(be16(f, 14)).toBe((5 << 13) | (1 << 12) | 100);
    expect(be16(f, 16)).toBe(0x0800);
    expect(f[18]).toBe(0x45);
    expect(f.length).toBe(60);
  });

  it('stacks several tags outermost first', () => {
    const f = ether({
      dst: M2,
      src: M1,
      type: EtherType.ARP,
      vlan: [{ id: 4095, tpid: EtherType.QINQ }, { id: 1 }],
      pad: false,
    });
    expect(slice(f, 12, 10)).toBe('88a8' + '0fff' + '8100' + '0001' + '0806');
    expect(f.length).toBe(22);
  });

  it('rejects out-of-range fields', () => {
    expect(() => ether({ dst: M2, src: M1, type: 0x10000 })).toThrow(NwfError);
    expect(() => ether({ dst: M2, src: M1, type: 0x800, vlan: { id: 4096 } })).toThrow(NwfError);
    expect(() => ether({ dst: M2, src: M1, type: 0x800, vlan: { id: 1, pcp: 8 } })).toThrow(NwfError);
  });

  it('builds 802.3 frames with a length field', () => {
    const f = ieee8023({ dst: M2, src: M1, payload: fromHex('aa aa 03 00 00 00 12 34') });
    expect(be16(f, 12)).toBe(8);
    expect(f.length).toBe(60);
  });
});

describe('IPv4', () => {
  it('reproduces the textbook header and checksum 0xb861', () => {
    const p = ipv4Packet({
      src: '192.168.0.1',
      dst: '192.168.0.199',
      protocol: IpProto.UDP,
      dontFragment: true,
      payload: new Uint8Array(0x73 - 20),
    });
    expect(slice(p, 0, 20)).toBe('450000730000400040 11b861c0a80001c0a800c7'.replace(/ /g, ''));
    expect(p.length).toBe(0x73);
  });

  it('has a header whose ones-complement sum is 0xffff', () => {
    const p = ipv4Packet({ src: '10.0.0.1', dst: '10.0.0.2', protocol: 6, ttl: 3, tos: 0x10, id: 0xbeef });
    expect(onesComplementSum(p.subarray(0, 20))).toBe(0xffff);
  });

  it('encodes options, fragments and DSCP', () => {
    const p = ipv4Packet({
      src: '10.0.0.1',
      dst: '10.0.0.2',
      protocol: 17,
      options: fromHex('94 04 00'), // router alert, padded to 4
      dscp: 46,
      tos: 0x01,
      moreFragments: true,
      fragOffset: 185,
      payload: fromHex('01 02'),
    });
    expect(p[0]).toBe(0x46);
    expect(p[1]).toBe((46 << 2) | 1);
    expect(be16(p, 2)).toBe(26);
    expect(be16(p, 6)).toBe(0x2000 | 185);
    expect(slice(p, 20, 4)).toBe('94040000');
    expect(onesComplementSum(p.subarray(0, 24))).toBe(0xffff);
    expect(slice(p, 24, 2)).toBe('0102');
  });

  it('honours raw overrides for malformed packets', () => {
    const p = ipv4Packet({ src: '10.0.0.1', dst: '10.0.0.2', protocol: 17, ihl: 4, totalLength: 1000, checksum: 0x1234 });
    expect(p[0]).toBe(0x44);
    expect(be16(p, 2)).toBe(1000);
    expect(be16(p, 10)).toBe(0x1234);
  });
});

describe('IPv6', () => {
  it('lays out the fixed header', () => {
    const p = ipv6Packet({
      src: '2001:db8::1',
      dst: 'ff02::1',
      nextHeader: 59,
      trafficClass: 0xab,
      flowLabel: 0xcdef1,
      hopLimit: 1,
      payload: fromHex('00 11 22'),
    });
    expect(slice(p, 0, 4)).toBe('6abcdef1');
    expect(be16(p, 4)).toBe(3);
    expect(p[6]).toBe(59);
    expect(p[7]).toBe(1);
    expect(slice(p, 8, 16)).toBe('20010db8000000000000000000000001');
    expect(slice(p, 24, 16)).toBe('ff020000000000000000000000000001');
    expect(slice(p, 40, 3)).toBe('001122');
  });
});

describe('transport checksums', () => {
  it('UDP over IPv4 (known value 0x3777)', () => {
    const ip = { src: '192.0.2.1', dst: '192.0.2.2' };
    const u = udp({ sport: 68, dport: 67, payload: text('hello') }, ip);
    expect(toHex(u)).toBe('00440043000d3777' + toHex(text('hello')));
    expect(onesComplementSum(pseudoHeader(ip, IpProto.UDP, u.length), u)).toBe(0xffff);
  });

  it('UDP over IPv6 (known value 0xadb4)', () => {
    const ip = { src: 'fe80::5054:ff:fe00:1', dst: 'ff02::1:2' };
    const u = udp({ sport: 546, dport: 547, payload: fromHex('01000001') }, ip);
    expect(be16(u, 6)).toBe(0xadb4);
    expect(onesComplementSum(pseudoHeader(ip, IpProto.UDP, u.length), u)).toBe(0xffff);
  });

  it('UDP sends a computed zero checksum as 0xffff and honours an explicit 0', () => {
    const ip = { src: '10.0.0.1', dst: '10.0.0.2' };
    // Choose a payload word that makes the sum 0xffff, i.e. checksum 0.
    const base = onesComplementSum(pseudoHeader(ip, 17, 10), udp({ sport: 1, dport: 2, payload: new Uint8Array(2), checksum: 0 }, ip));
    const w = 0xffff - base;
    const u = udp({ sport: 1, dport: 2, payload: Uint8Array.of(w >> 8, w & 0xff) }, ip);
    expect(be16(u, 6)).toBe(0xffff);
    expect(be16(udp({ sport: 1, dport: 2, checksum: 0 }, ip), 6)).toBe(0);
  });

  it('TCP over IPv4 (known value 0xdf20)', () => {
    const ip = { src: '192.0.2.1', dst: '198.51.100.7' };
    const t = tcp({ sport: 40000, dport: 80, flags: ['SYN'], seq: 12345, tcpOptions: fromHex('020405b4') }, ip);
    expect(toHex(t)).toBe('9c400050' + '00003039' + '00000000' + '6002' + 'ffff' + 'df20' + '0000' + '020405b4');
    expect(onesComplementSum(pseudoHeader(ip, IpProto.TCP, t.length), t)).toBe(0xffff);
  });

  it('TCP over IPv6 (known value 0x3ea5)', () => {
    const ip = { src: '2001:db8::1', dst: '2001:db8::2' };
    const t = tcp({ sport: 5555, dport: 22, flags: 0x02 }, ip);
    expect(be16(t, 16)).toBe(0x3ea5);
    expect(t[12]).toBe(0x50);
  });

  it('TCP flags by name or number', () => {
    expect(tcpFlags(['SYN', 'ACK'])).toBe(0x12);
    expect(tcpFlags(['FIN', 'PSH', 'URG'])).toBe(0x29);
    expect(tcpFlags(0xff)).toBe(0xff);
    expect(() => tcpFlags(0x100)).toThrow(NwfError);
  });

  it('ICMPv4 echo (known value 0x1f64)', () => {
    const m = icmpv4({ type: 8, id: 7, seq: 1, payload: text('pingdata!') });
    expect(slice(m, 0, 8)).toBe('08001f6400070001');
    expect(onesComplementSum(m)).toBe(0xffff);
  });

  it('ICMPv6 echo (known value 0x8973, includes the pseudo header)', () => {
    const ip = { src: '2001:db8::1', dst: '2001:db8::2' };
    const m = icmpv6({ type: 128, id: 1, seq: 2, payload: fromHex('abcdef') }, ip);
    expect(be16(m, 2)).toBe(0x8973);
    expect(onesComplementSum(pseudoHeader(ip, IpProto.ICMPV6, m.length), m)).toBe(0xffff);
  });

  it('rejects a pseudo header that mixes families', () => {
    expect(() => pseudoHeader({ src: '10.0.0.1', dst: '::1' }, 17, 8)).toThrow(NwfError);
  });
});

describe('whole frames', () => {
  it('udpFrame produces the exact known frame', () => {
    const f = udpFrame({ srcMac: M1, dstMac: M2, srcIp: '192.0.2.1', dstIp: '192.0.2.2', sport: 68, dport: 67, payload: text('hello') });
    const expected =
      '525400000002' + '525400000001' + '0800' +
      '4500 0021 0000 0000 4011 f6c8 c0000201 c0000202' +
      '0044 0043 000d 3777' + toHex(text('hello'));
    expect(f.length).toBe(60);
    expect(toHex(f)).toBe(toHex(fromHex(expected)) + '00'.repeat(60 - 47));
  });

  it('tcpFrame with VLAN tag and IP extras', () => {
    const f = tcpFrame({
      srcMac: M1,
      dstMac: M2,
      srcIp: '192.0.2.1',
      dstIp: '198.51.100.7',
      vlan: { id: 10 },
      sport: 1,
      dport: 2,
      flags: ['ACK'],
      ip: { ttl: 7, id: 0x1234, dontFragment: true },
    });
    expect(be16(f, 12)).toBe(0x8100);
    expect(be16(f, 14)).toBe(10);
    expect(be16(f, 16)).toBe(0x0800);
    const ipHdr = f.subarray(18, 38);
    expect(ipHdr[8]).toBe(7);
    expect(ipHdr[9]).toBe(IpProto.TCP);
    expect(be16(ipHdr, 4)).toBe(0x1234);
    expect(be16(ipHdr, 6)).toBe(0x4000);
    expect(onesComplementSum(ipHdr)).toBe(0xffff);
    const seg = f.subarray(38, 58);
    expect(seg[13]).toBe(0x10);
    expect(onesComplementSum(pseudoHeader({ src: '192.0.2.1', dst: '198.51.100.7' }, 6, 20), seg)).toBe(0xffff);
  });

  it('icmpFrame', () => {
    const f = icmpFrame({ srcMac: M1, dstMac: M2, srcIp: '10.0.0.1', dstIp: '10.0.0.2', type: 0, id: 1, seq: 1 });
    expect(f[14 + 9]).toBe(IpProto.ICMP);
    expect(onesComplementSum(f.subarray(34, 42))).toBe(0xffff);
  });

  it('IPv6 frames carry EtherType 0x86dd and valid checksums', () => {
    const src = 'fe80::1';
    const dst = 'ff02::1:2';
    const u = ipv6UdpFrame({ srcMac: M1, dstMac: '33:33:00:01:00:02', srcIp: src, dstIp: dst, sport: 546, dport: 547 });
    expect(be16(u, 12)).toBe(0x86dd);
    expect(u[14 + 6]).toBe(IpProto.UDP);
    expect(onesComplementSum(pseudoHeader({ src, dst }, 17, 8), u.subarray(54, 62))).toBe(0xffff);
    expect(u.length).toBe(62);

    const t = ipv6TcpFrame({ srcMac: M1, dstMac: M2, srcIp: '2001:db8::1', dstIp: '2001:db8::2', sport: 5555, dport: 22, flags: ['SYN'] });
    expect(be16(t, 54 + 16)).toBe(0x3ea5);

    const i = icmpv6Frame({ srcMac: M1, dstMac: '33:33:00:00:00:02', srcIp: src, dstIp: 'ff02::2', type: 133 });
    expect(i[14 + 6]).toBe(IpProto.ICMPV6);
    expect(i[14 + 7]).toBe(255);
    expect(onesComplementSum(pseudoHeader({ src, dst: 'ff02::2' }, 58, 8), i.subarray(54, 62))).toBe(0xffff);
  });

  it('pad: false keeps a short frame short', () => {
    const f = udpFrame({ srcMac: M1, dstMac: M2, srcIp: '10.0.0.1', dstIp: '10.0.0.2', sport: 1, dport: 2, pad: false });
    expect(f.length).toBe(14 + 20 + 8);
  });
});

describe('ARP and RARP', () => {
  it('arp body field offsets', () => {
    const b = arp({ op: 'Reply', sha: M1, spa: '192.0.2.1', tha: M2, tpa: '192.0.2.2' });
    expect(b.length).toBe(28);
    expect(toHex(b)).toBe(
      '0001' + '0800' + '06' + '04' + '0002' + '525400000001' + 'c0000201' + '525400000002' + 'c0000202',
    );
  });

  it('arpFrame defaults to a broadcast request from srcMac', () => {
    const f = arpFrame({ srcMac: M1, spa: '192.0.2.1', tpa: '192.0.2.254' });
    expect(f.length).toBe(60);
    expect(slice(f, 0, 6)).toBe('ffffffffffff');
    expect(be16(f, 12)).toBe(0x0806);
    expect(be16(f, 14)).toBe(1); // htype
    expect(be16(f, 16)).toBe(0x0800); // ptype
    expect(f[18]).toBe(6);
    expect(f[19]).toBe(4);
    expect(be16(f, 20)).toBe(ArpOp.Request);
    expect(slice(f, 22, 6)).toBe('525400000001'); // sha
    expect(slice(f, 28, 4)).toBe('c0000201'); // spa
    expect(slice(f, 32, 6)).toBe('000000000000'); // tha
    expect(slice(f, 38, 4)).toBe('c00002fe'); // tpa
  });

  it('arp accepts numeric opcodes and raw overrides', () => {
    const b = arp({ op: 9, sha: M1, htype: 6, ptype: 0x86dd, hlen: 8, plen: 16 });
    expect(slice(b, 0, 8)).toBe('000686dd08100009');
    expect(() => arp({ op: 0x10000, sha: M1 })).toThrow(NwfError);
  });

  it('rarpFrame uses EtherType 0x8035', () => {
    const f = rarpFrame({ srcMac: M1, dstMac: M2, op: 'Reply_Reverse', tha: M2, tpa: '10.0.0.5' });
    expect(be16(f, 12)).toBe(0x8035);
    expect(be16(f, 20)).toBe(4);
    expect(slice(f, 0, 6)).toBe('525400000002');
  });

  it('rarpAnnounceFrame is the QEMU post-migration announcement', () => {
    const f = rarpAnnounceFrame(M1);
    expect(slice(f, 0, 6)).toBe('ffffffffffff');
    expect(slice(f, 6, 6)).toBe('525400000001');
    expect(be16(f, 12)).toBe(EtherType.RARP);
    expect(be16(f, 20)).toBe(ArpOp.Request_Reverse);
    expect(slice(f, 22, 6)).toBe('525400000001');
    expect(slice(f, 28, 4)).toBe('00000000');
    expect(slice(f, 32, 6)).toBe('525400000001');
    expect(slice(f, 38, 4)).toBe('00000000');
  });
});

describe('STP', () => {
  it('builds an 802.3/LLC configuration BPDU to 01:80:c2:00:00:00', () => {
    const f = stpBpdu({ srcMac: M1, rootPriority: 0x1000, rootCost: 4, port: 0x8002, flags: 0x01 });
    expect(f.length).toBe(60);
    expect(slice(f, 0, 6)).toBe('0180c2000000');
    expect(slice(f, 6, 6)).toBe('525400000001');
    expect(be16(f, 12)).toBe(3 + 35);
    expect(slice(f, 14, 3)).toBe('424203');
    const b = f.subarray(17, 17 + 35);
    expect(slice(b, 0, 4)).toBe('00000000'); // protocol id, version, type
    expect(b[4]).toBe(0x01);
    expect(slice(b, 5, 8)).toBe('1000' + '525400000001'); // root id
    expect(slice(b, 13, 4)).toBe('00000004');
    expect(slice(b, 17, 8)).toBe('8000' + '525400000001'); // sender id
    expect(be16(b, 25)).toBe(0x8002);
    expect(be16(b, 27)).toBe(0);
    expect(be16(b, 29)).toBe(20 * 256);
    expect(be16(b, 31)).toBe(2 * 256);
    expect(be16(b, 33)).toBe(15 * 256);
    expect(f.subarray(52).every((x) => x === 0)).toBe(true);
  });

  it('builds a topology change notification', () => {
    expect(toHex(bpdu({ type: 0x80 }))).toBe('00000080');
    const f = stpBpdu({ srcMac: M1, type: 0x80, pad: false });
    expect(f.length).toBe(14 + 3 + 4);
    expect(be16(f, 12)).toBe(7);
  });
});
