// Takeover with recorded commands: which of libvirt's rules count as its
// dispatch for a tap, the one restore transaction per family that removes
// them, the record, and handback's inserts at the recorded positions (the
// kernel test does the same against real libvirt).
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { RecordingRunner } from '../../src/host/runner.js';
import { findDispatch, handBack, parseSave, readTakeover, takeOver, type SavedTable, type XtFamily } from '../../src/host/live/takeover.js';

const EB = `*nat
:PREROUTING ACCEPT
:OUTPUT ACCEPT
:POSTROUTING ACCEPT
:libvirt-I-vnet0 ACCEPT
:libvirt-O-vnet0 ACCEPT
:libvirt-I-vnet10 ACCEPT
:libvirt-J-vnet1 ACCEPT
-A PREROUTING -p 0x88b6 -j DROP
-A PREROUTING -i vnet0 -j libvirt-I-vnet0
-A PREROUTING -i vnet10 -j libvirt-I-vnet10
-A PREROUTING -i vnet1 -j libvirt-J-vnet1
-A PREROUTING -i vnet0 -j ACCEPT
-A POSTROUTING -o vnet0 -j libvirt-O-vnet0
`;
const IP = `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:FI-vnet0 - [0:0]
:FO-vnet0 - [0:0]
:HI-vnet0 - [0:0]
:libvirt-host-in - [0:0]
:libvirt-in - [0:0]
:libvirt-in-post - [0:0]
:libvirt-out - [0:0]
-A INPUT -j libvirt-host-in
-A FORWARD -j libvirt-in
-A FORWARD -j libvirt-out
-A FORWARD -j libvirt-in-post
-A libvirt-host-in -m physdev --physdev-in vnet0 -g HI-vnet0
-A libvirt-in -m physdev --physdev-in vnet0 -g FI-vnet0
-A libvirt-in-post -m physdev --physdev-in vnet0 -j ACCEPT
-A libvirt-out -m physdev --physdev-out vnet0 --physdev-is-bridged -g FO-vnet0
COMMIT
`;

function saves(eb: string, ip: string): Map<XtFamily, Map<string, SavedTable>> {
  return new Map([
    ['eb', parseSave(eb)],
    ['ip', parseSave(ip)],
    ['ip6', new Map()],
  ]);
}

/** Applies `-D CHAIN SPEC` / `-I CHAIN N SPEC` lines to a save listing, and prints it back as the save tools do (chains in declared order). */
function applyRestore(text: string, input: string): string {
  const head = text.trimEnd().split('\n').filter((l) => !l.startsWith('-A ') && l !== 'COMMIT');
  const [table, t] = [...parseSave(text)][0] as [string, SavedTable];
  for (const l of input.split('\n')) {
    const del = /^-D (\S+) (.*)$/.exec(l);
    const ins = /^-I (\S+) (\d+) (.*)$/.exec(l);
    if (del) {
      const rules = t.rules.get(del[1] as string) ?? [];
      const i = rules.indexOf(del[2] as string);
      if (i < 0) throw new Error(`${table}: no rule to delete: ${l}`);
      rules.splice(i, 1);
    } else if (ins) {
      const rules = t.rules.get(ins[1] as string) ?? [];
      if (Number(ins[2]) > rules.length + 1) throw new Error(`${table}: index of insertion too big: ${l}`);
      rules.splice(Number(ins[2]) - 1, 0, ins[3] as string);
      t.rules.set(ins[1] as string, rules);
    }
  }
  const body = [...t.chains].flatMap((c) => (t.rules.get(c) ?? []).map((r) => `-A ${c} ${r}`));
  return [...head, ...body, ...(text.includes('\nCOMMIT') ? ['COMMIT'] : []), ''].join('\n');
}

/** A runner that answers the save commands from `state` and applies restore input to it. */
function fakeXtables(state: { eb: string; ip: string }): RecordingRunner {
  return new RecordingRunner((argv, input) => {
    const tool = argv.find((a) => /tables-(save|restore)$/.test(a));
    if (tool === 'ebtables-save') return { stdout: state.eb };
    if (tool === 'iptables-save') return { stdout: state.ip };
    if (tool === 'ip6tables-save') return { stdout: '' };
    if (tool === 'ebtables-restore') state.eb = applyRestore(state.eb, input ?? '');
    else if (tool === 'iptables-restore') state.ip = applyRestore(state.ip, input ?? '');
    return {};
  });
}

describe("libvirt's dispatch for a tap", () => {
  it('is exactly the -i/-o TAP jumps into libvirt-I-/O-TAP and the physdev gotos into FI-/FO-/HI-TAP', () => {
    const d = findDispatch(saves(EB, IP), 'vnet0');
    expect(d.map((r) => `${r.family} ${r.chain} #${r.index}: ${r.spec}`)).toEqual([
      'eb PREROUTING #2: -i vnet0 -j libvirt-I-vnet0',
      'eb POSTROUTING #1: -o vnet0 -j libvirt-O-vnet0',
      'ip libvirt-in #1: -m physdev --physdev-in vnet0 -g FI-vnet0',
      'ip libvirt-out #1: -m physdev --physdev-out vnet0 --physdev-is-bridged -g FO-vnet0',
      'ip libvirt-host-in #1: -m physdev --physdev-in vnet0 -g HI-vnet0',
    ]);
  });

  it('never matches another tap, a temporary chain of libvirt re-instantiating, or a rule of someone else', () => {
    expect(findDispatch(saves(EB, IP), 'vnet1')).toEqual([]); // libvirt-J-vnet1: re-instantiation in progress
    expect(findDispatch(saves(EB, IP), 'vnet10').map((r) => r.spec)).toEqual(['-i vnet10 -j libvirt-I-vnet10']);
    expect(findDispatch(saves(EB, IP), 'vnet')).toEqual([]);
  });
});

describe('takeOver and handBack (recorded commands)', () => {
  it('removes the dispatch in one restore transaction per family, records it, and puts it back exactly', async () => {
    const state = { eb: EB, ip: IP };
    const runner = fakeXtables(state);
    const dir = mkdtempSync(join(tmpdir(), 'nwf-takeover-'));
    const r = await takeOver(dir, ['vnet0', 'vnet10'], { netns: 'host1', runner });
    expect(r.taken).toEqual(['vnet0', 'vnet10']);
    const restores = runner.calls.filter((c) => c.argv.includes('--noflush'));
    expect(restores.map((c) => c.argv)).toEqual([
      ['ip', 'netns', 'exec', 'host1', 'ebtables-restore', '--noflush'],
      ['ip', 'netns', 'exec', 'host1', 'iptables-restore', '--noflush'],
    ]);
    expect(restores[0]?.input).toBe('*nat\n-D PREROUTING -i vnet0 -j libvirt-I-vnet0\n-D POSTROUTING -o vnet0 -j libvirt-O-vnet0\n-D PREROUTING -i vnet10 -j libvirt-I-vnet10\n');
    expect(restores[1]?.input).toBe(
      '*filter\n-D libvirt-in -m physdev --physdev-in vnet0 -g FI-vnet0\n-D libvirt-out -m physdev --physdev-out vnet0 --physdev-is-bridged -g FO-vnet0\n-D libvirt-host-in -m physdev --physdev-in vnet0 -g HI-vnet0\nCOMMIT\n',
    );
    expect(state.eb).not.toContain('libvirt-I-vnet0\n-A');
    expect(state.ip).toContain('-A libvirt-in-post -m physdev --physdev-in vnet0 -j ACCEPT');
    expect(readTakeover(dir).map((t) => [t.tap, t.removed.length])).toEqual([
      ['vnet0', 5],
      ['vnet10', 1],
    ]);
    // a second takeover finds nothing to do
    expect((await takeOver(dir, ['vnet0'], { runner })).taken).toEqual([]);
    const h = await handBack(dir, 'all', { runner });
    expect([...h.restored.keys()].sort()).toEqual(['vnet0', 'vnet10']);
    expect(state).toEqual({ eb: EB, ip: IP });
    expect(readTakeover(dir)).toEqual([]);
  });

  it('undoes takeovers in reverse order, so positions are exact across several', async () => {
    const state = { eb: EB, ip: IP };
    const runner = fakeXtables(state);
    const dir = mkdtempSync(join(tmpdir(), 'nwf-takeover-'));
    await takeOver(dir, ['vnet0'], { runner });
    await takeOver(dir, ['vnet10'], { runner });
    await handBack(dir, 'all', { runner });
    expect(state.eb).toBe(EB);
  });

  it('does not restore a rule whose libvirt chain is gone, nor one libvirt put back itself', async () => {
    const state = { eb: EB, ip: IP };
    const runner = fakeXtables(state);
    const dir = mkdtempSync(join(tmpdir(), 'nwf-takeover-'));
    await takeOver(dir, ['vnet0', 'vnet10'], { runner });
    // libvirt tore vnet10 down, and re-instantiated vnet0's ebtables jump
    state.eb = applyRestore(state.eb.replace(':libvirt-I-vnet10 ACCEPT\n', ''), '-I PREROUTING 1 -i vnet0 -j libvirt-I-vnet0');
    const h = await handBack(dir, ['vnet0', 'vnet10'], { runner });
    expect(h.skipped.get('vnet10')?.map((r) => r.spec)).toEqual(['-i vnet10 -j libvirt-I-vnet10']);
    expect(h.skipped.get('vnet0')?.map((r) => r.spec)).toEqual(['-i vnet0 -j libvirt-I-vnet0']);
    expect(state.eb.match(/-i vnet0 -j libvirt-I-vnet0/g)).toHaveLength(1);
    expect(state.ip).toBe(IP);
    expect(readTakeover(dir)).toEqual([]);
  });
});
