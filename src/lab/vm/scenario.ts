// What a test guest does, and how a receiver recognises what it sent.
//
// The guest's /init (guest/init.sh) reads its scenario from the kernel
// command line; the frame sender (guest/nwf-send.c) marks every frame with a
// 16-byte marker at offset 42 (kind, tag, sequence numbers). The kind codes
// and the marker layout here must match nwf-send.c (a unit test builds the
// sender and decodes its frames with parseMarker).
import { CODES, NwfError } from '../../util/errors.js';

/** Frame kinds nwf-send can send, in the order of their codes (1..9). */
export const FRAME_KINDS = ['udp', 'arp', 'mac', 'ip', 'arpip', 'arpmac', 'garp', 'rarp', 'announce'] as const;
export type FrameKind = (typeof FRAME_KINDS)[number];

/** What each kind is, in words. */
export const FRAME_KIND_TEXT: Readonly<Record<FrameKind, string>> = {
  udp: 'IPv4/UDP from the guest\'s MAC and IP (legitimate)',
  arp: 'ARP request from the guest\'s MAC and IP (legitimate)',
  mac: 'IPv4/UDP with a spoofed Ethernet source MAC',
  ip: 'IPv4/UDP with a spoofed source IP',
  arpip: 'ARP request with a spoofed sender IP',
  arpmac: 'ARP request with a spoofed sender MAC',
  garp: 'gratuitous ARP for another IP',
  rarp: 'RARP request for another MAC',
  announce: "QEMU's announce-self RARP (legitimate)",
};

/** Kinds clean-traffic lets through from the guest, and kinds it must drop. */
export const LEGIT_KINDS: readonly FrameKind[] = ['udp', 'arp', 'announce'];
export const SPOOFED_KINDS: readonly FrameKind[] = ['mac', 'ip', 'arpip', 'arpmac', 'garp', 'rarp'];

export const MARKER_OFFSET = 42;
export const MARKER_LENGTH = 16;
const MAGIC = [0x4e, 0x57, 0x46, 0x4d]; // "NWFM"

export interface Marker {
  kind: FrameKind;
  /** guest tag * 16 + NIC index (see tagOf). */
  tag: number;
  /** The scenario step (1, 2, ... among the NIC's steps) that sent it. */
  step: number;
  /** Sequence number within the kind, in this step. */
  seq: number;
  /** Sequence number over every kind of this run. */
  total: number;
}

/** The marker of a frame sent by nwf-send, or undefined. */
export function parseMarker(frame: Uint8Array): Marker | undefined {
  const o = MARKER_OFFSET;
  if (frame.length < o + MARKER_LENGTH) return undefined;
  for (let i = 0; i < 4; i++) if (frame[o + i] !== MAGIC[i]) return undefined;
  if (frame[o + 4] !== 1) return undefined;
  const kind = FRAME_KINDS[(frame[o + 5] as number) - 1];
  if (kind === undefined) return undefined;
  const v = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  return { kind, tag: v.getUint16(o + 6), step: frame[o + 8] as number, seq: v.getUint32(o + 8) & 0xffffff, total: v.getUint32(o + 12) };
}

/** The tag of frames from NIC `nic` of the guest with tag `guestTag`. */
export function tagOf(guestTag: number, nic: number): number {
  return guestTag * 16 + nic;
}

/** One step of one NIC's scenario, run in order after the NIC is configured. */
export type GuestStep =
  | {
      nic: number;
      /** Send COUNT of each kind round-robin, paced at PPS frames/s (0: at once), for at most SECONDS (0: no limit); one of count/seconds must be set. */
      send: { kinds: readonly FrameKind[] | 'all'; count?: number; pps?: number; seconds?: number };
    }
  | { nic: number; sleep: number };

export interface GuestNicConfig {
  mac: string;
  /** Address with prefix length, e.g. 10.71.0.11/24. */
  ipv4: string;
}

export interface GuestScenario {
  /** 0..4095; frames of NIC i carry tagOf(tag, i). */
  tag: number;
  /** NICs by index: the ones the domain boots with first, then those hot-plugged later (the guest waits for them). */
  nics: readonly GuestNicConfig[];
  peer: { mac: string; ipv4: string };
  /** Addresses spoofed frames claim. Default: the NIC's own with the last byte changed. */
  spoof?: { mac: string; ipv4: string };
  steps: readonly GuestStep[];
  /** The guest powers itself off after this many seconds. Default 600. */
  lifetimeS?: number;
}

const MAC_RE = /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/;
const IPV4_RE = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

function checkIpv4(s: string, withPrefix: boolean): void {
  const [addr, len, ...rest] = s.split('/');
  const m = IPV4_RE.exec(addr ?? '');
  const ok = m !== null && m.slice(1).every((x) => Number(x) <= 255) && rest.length === 0 && (withPrefix ? len !== undefined && /^\d+$/.test(len) && Number(len) <= 32 : len === undefined);
  if (!ok) throw new NwfError(CODES.VALUE_INVALID, `vm scenario: invalid IPv4 address ${JSON.stringify(s)}`, { expected: withPrefix ? 'like 10.71.0.11/24' : 'like 10.71.0.1' });
}

function checkMac(s: string): void {
  if (!MAC_RE.test(s)) throw new NwfError(CODES.VALUE_INVALID, `vm scenario: invalid MAC ${JSON.stringify(s)}`, { expected: 'lowercase, like 52:54:00:00:00:01' });
}

function count(n: number | undefined, what: string): string {
  const v = n ?? 0;
  if (!Number.isFinite(v) || v < 0) throw new NwfError(CODES.VALUE_INVALID, `vm scenario: invalid ${what} ${v}`, { expected: 'a number >= 0' });
  return String(v);
}

/** The kernel command line words (nwf.*) that give the guest its scenario. */
export function scenarioCmdline(s: GuestScenario): string[] {
  if (!Number.isInteger(s.tag) || s.tag < 0 || s.tag > 4095) throw new NwfError(CODES.VALUE_INVALID, `vm scenario: invalid tag ${s.tag}`, { expected: '0..4095' });
  if (s.nics.length < 1 || s.nics.length > 16) throw new NwfError(CODES.VALUE_INVALID, `vm scenario: ${s.nics.length} NICs`, { expected: '1..16' });
  const words = [`nwf.tag=${s.tag}`];
  checkMac(s.peer.mac);
  checkIpv4(s.peer.ipv4, false);
  words.push(`nwf.peer=${s.peer.mac}+${s.peer.ipv4}`);
  if (s.spoof) {
    checkMac(s.spoof.mac);
    checkIpv4(s.spoof.ipv4, false);
    words.push(`nwf.spoof=${s.spoof.mac}+${s.spoof.ipv4}`);
  }
  for (const n of s.nics) {
    checkMac(n.mac);
    checkIpv4(n.ipv4, true);
    words.push(`nwf.net=${n.mac}+${n.ipv4}`);
  }
  for (const st of s.steps) {
    if (!Number.isInteger(st.nic) || st.nic < 0 || st.nic >= s.nics.length) throw new NwfError(CODES.VALUE_INVALID, `vm scenario: a step for NIC ${st.nic}`, { expected: `0..${s.nics.length - 1}` });
    if ('sleep' in st) {
      words.push(`nwf.run=${st.nic}+sleep+${count(st.sleep, 'sleep')}`);
      continue;
    }
    const kinds = st.send.kinds === 'all' ? 'all' : st.send.kinds.join(',');
    if (!kinds || (st.send.kinds !== 'all' && st.send.kinds.some((k) => !FRAME_KINDS.includes(k)))) throw new NwfError(CODES.VALUE_INVALID, `vm scenario: invalid kinds ${kinds}`, { expected: FRAME_KINDS.join(', ') });
    if (!st.send.count && !st.send.seconds) throw new NwfError(CODES.VALUE_INVALID, 'vm scenario: a send step without count or seconds', { expected: 'a bound on every send' });
    words.push(`nwf.run=${st.nic}+send+${kinds}+${count(st.send.count, 'count')}+${count(st.send.pps, 'pps')}+${count(st.send.seconds, 'seconds')}`);
  }
  words.push(`nwf.life=${count(s.lifetimeS ?? 600, 'lifetime')}`);
  return words;
}
