// Netlink messages and attributes, written into one growing buffer and read
// back from the kernel's replies. Generic netlink framing only: nf_tables
// knowledge lives in encode.ts. Integers in headers are host byte order
// (little endian on the machines nwf-fast supports); nf_tables attribute
// payloads are big endian where the uapi says so, written by the caller.
import { InternalError } from '../../util/errors.js';
import { NFGENMSG_LEN, NLA_F_NESTED, NLA_HDRLEN, NLMSG_HDRLEN, NLMSGERR_ATTR_MSG, NLMSGERR_ATTR_OFFS, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLMSG_ERROR } from './uapi.js';

const align4 = (n: number): number => (n + 3) & ~3;

if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  throw new InternalError('the netlink encoder assumes a little-endian host');
}

/**
 * Writes netlink messages one after the other (a batch is several messages
 * in one send). The buffer only grows and is zeroed when allocated, so
 * padding needs no writes; small integers and ASCII strings are written
 * byte by byte (a full load writes a few million bytes this way).
 */
export class NlWriter {
  private buf: Buffer;
  private len = 0;
  private msgStart = -1;
  private readonly nests: number[] = [];

  constructor(capacity = 1024) {
    this.buf = Buffer.alloc(capacity);
  }

  get length(): number {
    return this.len;
  }

  private reserve(n: number): number {
    const at = this.len;
    if (at + n > this.buf.length) {
      const grown = Buffer.alloc(Math.max(this.buf.length * 2, at + n));
      this.buf.copy(grown, 0, 0, at);
      this.buf = grown;
    }
    this.len = at + n;
    return at;
  }

  /** Starts a message with an nfgenmsg header; returns its offset in the batch. */
  begin(type: number, flags: number, seq: number, family: number, resId = 0): number {
    if (this.msgStart >= 0) throw new InternalError('netlink message not ended');
    const at = this.reserve(NLMSG_HDRLEN + NFGENMSG_LEN);
    this.buf.writeUInt16LE(type, at + 4);
    this.buf.writeUInt16LE(flags, at + 6);
    this.buf.writeUInt32LE(seq >>> 0, at + 8);
    // nlmsg_pid 0: the kernel
    this.buf.writeUInt8(family, at + 16);
    this.buf.writeUInt8(0, at + 17); // NFNETLINK_V0
    this.buf.writeUInt16BE(resId, at + 18);
    this.msgStart = at;
    return at;
  }

  end(): void {
    if (this.msgStart < 0 || this.nests.length) throw new InternalError('netlink message or nest not open');
    this.buf.writeUInt32LE(this.len - this.msgStart, this.msgStart);
    this.msgStart = -1;
  }

  /** An attribute with a raw payload, padded to 4 bytes. */
  attr(type: number, payload: Uint8Array): void {
    const at = this.reserve(align4(NLA_HDRLEN + payload.length));
    this.header(at, NLA_HDRLEN + payload.length, type);
    const b = this.buf;
    if (payload.length <= 16) for (let i = 0; i < payload.length; i++) b[at + NLA_HDRLEN + i] = payload[i] as number;
    else b.set(payload, at + NLA_HDRLEN);
  }

  /**
   * An attribute of `len` bytes that `write` fills in place (the bytes are
   * zero before); when it returns false the attribute is taken back.
   */
  attrInPlace(type: number, len: number, write: (buf: Buffer, at: number) => boolean): boolean {
    const at = this.reserve(align4(NLA_HDRLEN + len));
    if (!write(this.buf, at + NLA_HDRLEN)) {
      this.buf.fill(0, at, this.len);
      this.len = at;
      return false;
    }
    this.header(at, NLA_HDRLEN + len, type);
    return true;
  }

  /** An attribute header: length and type, little endian. */
  private header(at: number, len: number, type: number): void {
    const b = this.buf;
    b[at] = len & 0xff;
    b[at + 1] = len >>> 8;
    b[at + 2] = type & 0xff;
    b[at + 3] = type >>> 8;
  }

  /** A NUL-terminated string attribute (NLA_STRING / NLA_NUL_STRING). */
  strz(type: number, s: string): void {
    let ascii = true;
    for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7f) ascii = false;
    const n = (ascii ? s.length : Buffer.byteLength(s, 'utf8')) + 1;
    const at = this.reserve(align4(NLA_HDRLEN + n));
    this.header(at, NLA_HDRLEN + n, type);
    if (ascii) for (let i = 0; i < s.length; i++) this.buf[at + NLA_HDRLEN + i] = s.charCodeAt(i);
    else this.buf.write(s, at + NLA_HDRLEN, 'utf8');
  }

  /** A big-endian u32 attribute (nf_tables integers are network byte order). */
  be32(type: number, v: number): void {
    const at = this.reserve(NLA_HDRLEN + 4);
    this.header(at, NLA_HDRLEN + 4, type);
    const b = this.buf;
    const x = v >>> 0;
    b[at + 4] = x >>> 24;
    b[at + 5] = (x >>> 16) & 0xff;
    b[at + 6] = (x >>> 8) & 0xff;
    b[at + 7] = x & 0xff;
  }

  /** Opens a nested attribute (NLA_F_NESTED set); returns its offset. */
  nest(type: number): number {
    const at = this.reserve(NLA_HDRLEN);
    this.header(at, 0, type | NLA_F_NESTED);
    this.nests.push(at);
    return at;
  }

  nestEnd(): void {
    const at = this.nests.pop();
    if (at === undefined) throw new InternalError('no open netlink nest');
    const len = this.len - at;
    this.buf[at] = len & 0xff;
    this.buf[at + 1] = len >>> 8;
  }

  /** The bytes written so far (a copy). */
  bytes(): Buffer {
    return Buffer.from(this.buf.subarray(0, this.len));
  }
}

/** One reply message as the kernel sent it. */
export interface NlReply {
  type: number;
  flags: number;
  seq: number;
  /** For NLMSG_ERROR: 0 (an acknowledgement) or a positive errno. */
  errno?: number;
  /** Extended ack: the kernel's message. */
  extMsg?: string;
  /** Extended ack: offset of the attribute at fault in the original request message. */
  extOffset?: number;
  /** A message other than NLMSG_ERROR: its payload after the netlink header (a copy). */
  body?: Buffer;
  /** Any other message (an nfnetlink reply): its top-level attributes by type, after the nfgenmsg header. */
  attrs?: Map<number, Buffer>;
}

/** The top-level attributes of a payload (type without NLA_F_NESTED -> payload copy); the last one of a type wins. */
export function parseAttrs(b: Buffer): Map<number, Buffer> {
  const out = new Map<number, Buffer>();
  for (let at = 0; at + NLA_HDRLEN <= b.length; ) {
    const len = b.readUInt16LE(at);
    if (len < NLA_HDRLEN || at + len > b.length) break;
    out.set(b.readUInt16LE(at + 2) & ~NLA_F_NESTED, Buffer.from(b.subarray(at + NLA_HDRLEN, at + len)));
    at += align4(len);
  }
  return out;
}

/** Splits a receive buffer into replies and decodes acknowledgements and errors. */
export function parseReplies(buf: Buffer, len: number): NlReply[] {
  const out: NlReply[] = [];
  let at = 0;
  while (at + NLMSG_HDRLEN <= len) {
    const mlen = buf.readUInt32LE(at);
    if (mlen < NLMSG_HDRLEN || at + mlen > len) throw new InternalError(`malformed netlink reply (length ${mlen} at ${at} of ${len})`);
    const r: NlReply = { type: buf.readUInt16LE(at + 4), flags: buf.readUInt16LE(at + 6), seq: buf.readUInt32LE(at + 8) };
    if (r.type === NLMSG_ERROR && mlen >= NLMSG_HDRLEN + 4 + NLMSG_HDRLEN) {
      const e = buf.readInt32LE(at + NLMSG_HDRLEN);
      r.errno = e === 0 ? 0 : -e;
      // struct nlmsgerr: error, then the request's header (and its payload unless capped)
      const reqLen = buf.readUInt32LE(at + NLMSG_HDRLEN + 4);
      let tlv = at + NLMSG_HDRLEN + 4 + (r.flags & NLM_F_CAPPED || r.errno === 0 ? NLMSG_HDRLEN : align4(reqLen));
      if (r.flags & NLM_F_ACK_TLVS) {
        while (tlv + NLA_HDRLEN <= at + mlen) {
          const alen = buf.readUInt16LE(tlv);
          const atype = buf.readUInt16LE(tlv + 2) & ~NLA_F_NESTED;
          if (alen < NLA_HDRLEN || tlv + alen > at + mlen) break;
          const p = buf.subarray(tlv + NLA_HDRLEN, tlv + alen);
          if (atype === NLMSGERR_ATTR_MSG) r.extMsg = p.toString('utf8').replace(/\0.*$/s, '');
          else if (atype === NLMSGERR_ATTR_OFFS && p.length >= 4) r.extOffset = p.readUInt32LE(0);
          tlv += align4(alen);
        }
      }
    }
    if (r.type !== NLMSG_ERROR) {
      r.body = Buffer.from(buf.subarray(at + NLMSG_HDRLEN, at + mlen));
      if (mlen >= NLMSG_HDRLEN + NFGENMSG_LEN) r.attrs = parseAttrs(buf.subarray(at + NLMSG_HDRLEN + NFGENMSG_LEN, at + mlen));
    }
    out.push(r);
    at += align4(mlen);
  }
  return out;
}
