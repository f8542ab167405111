// Minimal frame builders for the kernel tests of src/host (testbed, nft):
// Ethernet frames carrying an 8-byte tag right after the header, and IPv4/UDP
// frames with a correct header checksum (br_netfilter drops bad ones).
import { frameTag } from '../../src/lab/packet-io.js';

export function macBytes(mac: string): Uint8Array {
  return Uint8Array.from(mac.split(':').map((h) => parseInt(h, 16)));
}

function ipBytes(ip: string): Uint8Array {
  return Uint8Array.from(ip.split('.').map((d) => Number(d)));
}

/** Ethernet frame: dst, src, EtherType, then the tag (at offset 14), padded to 60 bytes. */
export function etherFrame(dst: string, src: string, etherType: number, tag: Uint8Array): Uint8Array {
  const f = new Uint8Array(60);
  f.set(macBytes(dst), 0);
  f.set(macBytes(src), 6);
  f[12] = etherType >> 8;
  f[13] = etherType & 0xff;
  f.set(tag, 14);
  return f;
}

/** Offset of the tag in ipv4UdpFrame(): 14 (Ethernet) + 20 (IPv4) + 8 (UDP). */
export const UDP_TAG_OFFSET = 42;

/** IPv4/UDP frame with a valid IP header checksum (UDP checksum 0) and the tag as UDP payload. */
export function ipv4UdpFrame(dst: string, src: string, srcIp: string, dstIp: string, tag: Uint8Array): Uint8Array {
  const payload = 8 + tag.length;
  const f = new Uint8Array(14 + 20 + payload);
  const v = new DataView(f.buffer);
  f.set(macBytes(dst), 0);
  f.set(macBytes(src), 6);
  v.setUint16(12, 0x0800);
  const ip = 14;
  f[ip] = 0x45;
  v.setUint16(ip + 2, 20 + payload);
  v.setUint16(ip + 4, 0x1234);
  f[ip + 8] = 64; // ttl
  f[ip + 9] = 17; // udp
  f.set(ipBytes(srcIp), ip + 12);
  f.set(ipBytes(dstIp), ip + 16);
  let sum = 0;
  for (let i = 0; i < 20; i += 2) sum += v.getUint16(ip + i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  v.setUint16(ip + 10, ~sum & 0xffff);
  const udp = ip + 20;
  v.setUint16(udp, 40000);
  v.setUint16(udp + 2, 9);
  v.setUint16(udp + 4, payload);
  f.set(tag, udp + 8);
  return f;
}

/** n tags with a random salt, so frames of different runs never match. */
export function tags(n: number): Uint8Array[] {
  const salt = Math.floor(Math.random() * 0x10000);
  return Array.from({ length: n }, (_, i) => frameTag(i, salt));
}
