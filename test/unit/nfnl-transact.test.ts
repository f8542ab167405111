// Acknowledgements and refusals of element batches (a scripted socket stands
// in for the kernel), reply parsing, and element changes from the typed
// element deltas of the load plan.
import { describe, expect, it } from 'vitest';
import { add, jump, nftTable, sym, tuple } from '../../src/backends/nft/build.js';
import type { NftBatch } from '../../src/backends/nft/model.js';
import { diffParts, setIndexOf, type SetDelta } from '../../src/host/load-plan.js';
import { elementChanges } from '../../src/host/nfnl/index.js';
import type { ElementChange } from '../../src/host/nfnl/encode.js';
import { parseReplies, type NlReply } from '../../src/host/nfnl/netlink.js';
import { NfnlBatchError, sendElementBatch, type BatchSocket } from '../../src/host/nfnl/transact.js';

const str = (value: string) => ({ kind: 'string' as const, value });
const SET = { family: 'bridge' as const, table: 'nwf_fast', name: 'g1a2b3c_is0_a1', type: ['ifname', 'ipv4_addr'] as const };
const CHANGES: ElementChange[] = [
  { op: 'delete', set: SET, elements: [{ kind: 'tuple', items: [str('vnet0'), str('10.0.0.1')] }] },
  {
    op: 'add',
    set: SET,
    elements: [
      { kind: 'tuple', items: [str('vnet0'), str('10.0.0.2')] },
      { kind: 'tuple', items: [str('vnet0'), str('10.0.0.3')] },
    ],
  },
];

/** A socket whose kernel answers with `answer(the batch's messages by seq)`. */
function scripted(answer: (seqs: { begin: number; msgs: number[]; end: number; sent: Buffer }) => NlReply[]): BatchSocket & { sent?: Buffer } {
  let next = 1000;
  let replies: NlReply[] = [];
  const s: BatchSocket & { sent?: Buffer } = {
    reserveSeq(n) {
      const first = next;
      next += n;
      return first;
    },
    send(bytes) {
      s.sent = bytes;
      const seqs: number[] = [];
      for (let at = 0; at < bytes.length; at += bytes.readUInt32LE(at)) seqs.push(bytes.readUInt32LE(at + 8));
      replies = answer({ begin: seqs[0]!, msgs: seqs.slice(1, -1), end: seqs[seqs.length - 1]!, sent: bytes });
    },
    receive(done) {
      const r = replies;
      replies = [];
      done(r);
      return r;
    },
  };
  return s;
}
const ack = (seq: number, errno = 0, ext: Partial<NlReply> = {}): NlReply => ({ type: 2, flags: 0, seq, errno, ...ext });

describe('element batch acknowledgements', () => {
  it('is applied when the kernel acknowledges the end of the batch', () => {
    const r = sendElementBatch(scripted(({ msgs, end }) => [...msgs.map((m) => ack(m)), ack(end)]), CHANGES);
    expect(r).toMatchObject({ messages: 2, elements: 3 });
  });

  it('is applied when every message is acknowledged (kernels that do not acknowledge the end)', () => {
    expect(sendElementBatch(scripted(({ msgs }) => msgs.map((m) => ack(m))), CHANGES).messages).toBe(2);
  });

  it('sends nothing for an empty change set', () => {
    const s = scripted(() => []);
    expect(sendElementBatch(s, [{ ...CHANGES[0]!, elements: [] }])).toEqual({ messages: 0, elements: 0, bytes: 0 });
    expect(s.sent).toBeUndefined();
  });

  it('names the set, the element (from the extended ack offset) and the errno of a refusal', () => {
    // the second element of the add message is at fault: its NFTA_LIST_ELEM offset
    const s = scripted(({ msgs, sent }) => {
      const m2 = msgs[1]!;
      // find the add message and the offset of its second element
      let at = 0;
      while (sent.readUInt32LE(at + 8) !== m2) at += sent.readUInt32LE(at);
      const second = 40 + sent.readUInt16LE(at + 40);
      return [ack(msgs[0]!), ack(m2, 17, { extOffset: second + 2, extMsg: 'exists' })];
    });
    let err: unknown;
    try {
      sendElementBatch(s, CHANGES);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(NfnlBatchError);
    const e = err as NfnlBatchError;
    expect(e.errno).toBe(17);
    expect(e.code).toBe('NWF1404');
    expect(e.message).toBe(
      'nf_tables refused to add element "vnet0" . 10.0.0.3 to set bridge nwf_fast g1a2b3c_is0_a1: EEXIST (file already exists): the key is already in the set with other data, or overlaps an interval in it; kernel: exists',
    );
    expect(e.details.hint).toMatch(/rolled the whole batch back/);
  });

  it('says which deletion is missing from the set', () => {
    const s = scripted(({ msgs }) => [ack(msgs[0]!, 2), ack(msgs[1]!)]);
    expect(() => sendElementBatch(s, CHANGES)).toThrow('nf_tables refused to delete element "vnet0" . 10.0.0.1 from set bridge nwf_fast g1a2b3c_is0_a1: ENOENT (no such file or directory): the element is not in the set');
  });

  it('fails closed when the kernel does not answer', () => {
    const s = scripted(({ msgs }) => [ack(msgs[0]!)]);
    expect(() => sendElementBatch(s, CHANGES, 5)).toThrow(/did not acknowledge .* whether it was applied is unknown/);
  });

  it('ignores replies to other sequence numbers', () => {
    const s = scripted(({ msgs }) => [ack(5, 2), ack(msgs[0]! + 100, 2)]);
    expect(() => sendElementBatch(s, CHANGES, 5)).toThrow(/did not acknowledge/);
  });
});

describe('netlink replies', () => {
  it('decodes an acknowledgement and an error with extended ack attributes', () => {
    const b = Buffer.alloc(36 + 56);
    // ack: nlmsghdr(len 36, NLMSG_ERROR, flags NLM_F_CAPPED, seq 7) + error 0 + the request's header
    b.writeUInt32LE(36, 0);
    b.writeUInt16LE(2, 4);
    b.writeUInt16LE(0x100, 6);
    b.writeUInt32LE(7, 8);
    b.writeInt32LE(0, 16);
    b.writeUInt32LE(60, 20);
    // error: capped, with NLM_F_ACK_TLVS: NLMSGERR_ATTR_MSG "bad\0", NLMSGERR_ATTR_OFFS 44
    const e = 36;
    b.writeUInt32LE(56, e);
    b.writeUInt16LE(2, e + 4);
    b.writeUInt16LE(0x300, e + 6);
    b.writeUInt32LE(8, e + 8);
    b.writeInt32LE(-2, e + 16);
    b.writeUInt32LE(60, e + 20);
    b.writeUInt16LE(8, e + 36);
    b.writeUInt16LE(1, e + 38);
    b.write('bad\0', e + 40);
    b.writeUInt16LE(8, e + 44);
    b.writeUInt16LE(2, e + 46);
    b.writeUInt32LE(44, e + 48);
    expect(parseReplies(b, b.length)).toEqual([
      { type: 2, flags: 0x100, seq: 7, errno: 0 },
      { type: 2, flags: 0x300, seq: 8, errno: 2, extMsg: 'bad', extOffset: 44 },
    ]);
  });

  it('refuses a truncated reply', () => {
    const b = Buffer.alloc(20);
    b.writeUInt32LE(40, 0);
    expect(() => parseReplies(b, 20)).toThrow(/malformed netlink reply/);
  });
});

describe('element deltas from the typed load plan', () => {
  const t = nftTable('bridge', 'nwf_fast');
  const tag = 'g1a2b3c';
  const n = (x: string) => `${tag}_${x}`;
  const tup = (...items: string[]) => tuple(...items.map((i) => (i.includes('.') || i.includes(':') ? sym(i) : str(i))));
  const build = (ip: string, prefix: string, target: string): NftBatch => [
    add(t.table),
    add(t.chain(n('is0'))),
    add(t.chain(n('is1'))),
    add(t.counter('drop_vnet0_rarp')),
    add(t.set(n('is0_a1'), ['ifname', 'ipv4_addr'], [tup('vnet0', ip)])),
    add(t.set(n('is0_a5'), ['ifname', 'ipv6_addr'], [tuple(str('vnet0'), prefix6(prefix))], { flags: ['interval'] })),
    add(t.verdictMap(n('from_vm'), 'ifname', [[str('vnet0'), jump(n(target))]])),
    add(t.dataMap(n('cnt_out_rarp'), 'ifname', 'counter', [[str('vnet0'), str('drop_vnet0_rarp')]])),
  ];
  const prefix6 = (addr: string) => ({ kind: 'prefix' as const, addr, len: 64 });
  /** The element delta the typed diff finds between two builds (one part each). */
  const elementDelta = (a: NftBatch, b: NftBatch): SetDelta[] | undefined => diffParts([{ id: 'x', commands: a }], [{ id: 'x', commands: b }], setIndexOf([a, b]))?.deltas;

  it("takes each set's key and data types from its typed declaration, deletions first", () => {
    const deltas = elementDelta(build('10.0.0.1', 'fd00::', 'is0'), build('10.0.0.2', 'fd01::', 'is1'))!;
    const ch = elementChanges(deltas);
    expect(ch.map((c) => [c.op, c.set.name, c.set.type, c.set.flags ?? null, c.set.map ?? null])).toEqual([
      ['delete', n('is0_a1'), ['ifname', 'ipv4_addr'], null, null],
      ['delete', n('is0_a5'), ['ifname', 'ipv6_addr'], ['interval'], null],
      ['delete', n('from_vm'), 'ifname', null, 'verdict'],
      ['add', n('is0_a1'), ['ifname', 'ipv4_addr'], null, null],
      ['add', n('is0_a5'), ['ifname', 'ipv6_addr'], ['interval'], null],
      ['add', n('from_vm'), 'ifname', null, 'verdict'],
    ]);
    expect(ch[0]?.elements).toEqual([tup('vnet0', '10.0.0.1')]);
    expect(ch[2]?.elements).toEqual([str('vnet0')]);
    expect(ch[4]?.elements).toEqual([tuple(str('vnet0'), prefix6('fd01::'))]);
    expect(ch[5]?.elements).toEqual([[str('vnet0'), jump(n('is1'))]]);
    expect(ch.every((c) => c.set.family === 'bridge' && c.set.table === 'nwf_fast')).toBe(true);
  });

  it('a counter map entry is a counter name; no change, no message', () => {
    const a = build('10.0.0.1', 'fd00::', 'is0');
    const b = a.map((c) => (c.op === 'add' && c.object.kind === 'map' && c.object.map === 'counter' ? add(t.dataMap(n('cnt_out_rarp'), 'ifname', 'counter', [[str('vnet1'), str('drop_vnet0_rarp')]])) : c));
    const ch = elementChanges(elementDelta(a, b)!);
    expect(ch.map((c) => [c.op, c.set.map, c.elements])).toEqual([
      ['delete', 'counter', [str('vnet0')]],
      ['add', 'counter', [[str('vnet1'), str('drop_vnet0_rarp')]]],
    ]);
    expect(elementChanges(elementDelta(a, a)!)).toEqual([]);
  });
});
