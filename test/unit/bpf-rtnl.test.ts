// The rtnetlink requests of the batched tc attach (src/host/bpf/rtnl.ts),
// byte by byte: what libbpf's bpf_tc_hook_create and bpf_tc_attach(REPLACE)
// send, without their NLM_F_ECHO (test/kernel/libbpf.test.ts sends them to a
// real kernel).
import { describe, expect, it } from 'vitest';
import { encodeTcRequests } from '../../src/host/bpf/rtnl.js';

/** Messages of a buffer: header fields, the struct tcmsg, and the attributes (nested ones one level deep). */
function messages(b: Buffer) {
  const out = [];
  let at = 0;
  while (at < b.length) {
    const len = b.readUInt32LE(at);
    const attrs: { type: number; nested: boolean; payload: Buffer }[] = [];
    for (let a = at + 36; a < at + len; ) {
      const alen = b.readUInt16LE(a);
      const type = b.readUInt16LE(a + 2);
      attrs.push({ type: type & 0x7fff, nested: (type & 0x8000) !== 0, payload: b.subarray(a + 4, a + alen) });
      a += (alen + 3) & ~3;
    }
    out.push({
      len,
      type: b.readUInt16LE(at + 4),
      flags: b.readUInt16LE(at + 6),
      seq: b.readUInt32LE(at + 8),
      tcm: { family: b.readUInt8(at + 16), ifindex: b.readInt32LE(at + 20), handle: b.readUInt32LE(at + 24), parent: b.readUInt32LE(at + 28), info: b.readUInt32LE(at + 32) },
      attrs,
    });
    at += (len + 3) & ~3;
  }
  return out;
}

describe('batched tc requests (bpf/rtnl.ts)', () => {
  it('encodes a clsact qdisc and two direct-action bpf filters as libbpf does', () => {
    const buf = encodeTcRequests(
      [
        { kind: 'clsact', ifindex: 7 },
        { kind: 'filter', ifindex: 7, direction: 'ingress', handle: 0x4e57, priority: 0x4e57, prog: 33 },
        { kind: 'filter', ifindex: 7, direction: 'egress', handle: 0x4e57, priority: 0x4e57, prog: 34 },
      ],
      100,
    );
    const [q, fin, feg] = messages(buf);
    expect(messages(buf)).toHaveLength(3);
    // RTM_NEWQDISC, NLM_F_REQUEST|NLM_F_ACK|NLM_F_EXCL|NLM_F_CREATE; handle TC_H_CLSACT:0, parent TC_H_CLSACT
    expect(q).toMatchObject({ type: 36, flags: 0x01 | 0x04 | 0x200 | 0x400, seq: 100, tcm: { family: 0, ifindex: 7, handle: 0xffff0000, parent: 0xfffffff1, info: 0 } });
    expect(q?.attrs).toEqual([{ type: 1, nested: false, payload: Buffer.from('clsact\0') }]);
    // RTM_NEWTFILTER, NLM_F_REQUEST|NLM_F_ACK|NLM_F_REPLACE|NLM_F_CREATE; info: priority << 16 | htons(ETH_P_ALL)
    for (const [f, parent, fd, seq] of [[fin, 0xfffffff2, 33, 101], [feg, 0xfffffff3, 34, 102]] as const) {
      expect(f).toMatchObject({ type: 44, flags: 0x01 | 0x04 | 0x100 | 0x400, seq, tcm: { family: 0, ifindex: 7, handle: 0x4e57, parent, info: (0x4e57 << 16) | 0x0300 } });
      expect(f?.attrs.map((a) => [a.type, a.nested])).toEqual([[1, false], [2, true]]);
      expect(f?.attrs[0]?.payload).toEqual(Buffer.from('bpf\0'));
      const opts = f?.attrs[1]?.payload as Buffer;
      // TCA_BPF_FD, TCA_BPF_NAME, TCA_BPF_FLAGS = TCA_BPF_FLAG_ACT_DIRECT
      expect(opts.readUInt16LE(2)).toBe(6);
      expect(opts.readUInt32LE(4)).toBe(fd);
      expect(opts.readUInt16LE(10)).toBe(7);
      const nameLen = opts.readUInt16LE(8);
      expect(opts.subarray(12, 8 + nameLen).toString()).toBe(`fd${fd}\0`);
      const flagsAt = 8 + ((nameLen + 3) & ~3);
      expect([opts.readUInt16LE(flagsAt + 2), opts.readUInt32LE(flagsAt + 4)]).toEqual([8, 1]);
      expect(flagsAt + 8).toBe(opts.length);
    }
    expect(buf.length).toBe([q, fin, feg].reduce((n, m) => n + ((m?.len as number) + 3 & ~3), 0));
  });
});
