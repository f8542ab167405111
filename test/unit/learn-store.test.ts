// The learned state (design ip-learning.md 4.1, 4.3, 5.5): learned.json,
// the seed decision table (load/rollback/restore, start after migrate or
// restore begin, fresh boot, stop), expiry, forget, the incoming notes, and
// what status shows.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { learnKey, type LearnedEntry } from '../../src/ir/learning.js';
import { forgetEntries, learnModeOf, readLearned, recordKernel, sameLearned, seedsForChange, seedsForLoad, seedsForStart, writeLearned, LEARNED_FILE } from '../../src/host/learn/store.js';
import { INCOMING_FILE, INCOMING_TTL_MS, noteIncoming, takeIncoming } from '../../src/host/learn/incoming.js';
import { learningStatus } from '../../src/host/learn/status.js';
import type { DesiredPort } from '../../src/host/live/ports.js';
import { nwfErrorOf, run } from '../support/cli.js';
import { writePorts } from '../../src/host/live/ports.js';

const U1 = '11111111-2222-4333-8444-555555555555';
const U2 = '66666666-2222-4333-8444-555555555555';
const NOW = Date.parse('2026-12-03T12:00:00Z');
const LATER = '2026-12-03T13:00:00Z';
const EARLIER = '2026-12-03T11:00:00Z';

const port = (tap: string, mac: string, params: Record<string, string[]> = {}, owner = { name: 'vm1', uuid: U1 }): DesiredPort => ({
  tap,
  mac,
  owner,
  filterref: { filter: 'clean-traffic', params },
  origin: 'filterref',
  source: 'hook',
  at: EARLIER,
});
const ANY = port('vnet0', '52:54:00:00:00:01');
const DHCP = port('vnet1', '52:54:00:00:00:02', { CTRL_IP_LEARNING: ['DHCP'] });
const STATIC = port('vnet2', '52:54:00:00:00:03', { IP: ['10.0.0.3'] });
const NONE = port('vnet3', '52:54:00:00:00:04', { CTRL_IP_LEARNING: ['none'] });
const OTHER = port('vnet9', '52:54:00:00:00:09', {}, { name: 'vm2', uuid: U2 });

const any = (p: DesiredPort, ip: string, source: 'kernel' | 'metadata' | 'state' = 'state'): LearnedEntry => ({ owner: { ...p.owner }, mac: p.mac, mode: 'any', addresses: [{ ip, since: EARLIER, source }] });
const dhcp = (p: DesiredPort, leases: [string, string][], source: 'kernel' | 'metadata' | 'state' = 'state'): LearnedEntry => ({ owner: { ...p.owner }, mac: p.mac, mode: 'dhcp', addresses: leases.map(([ip, expires]) => ({ ip, expires, server: '10.0.0.254', source })) });
const ips = (m: ReadonlyMap<string, LearnedEntry>, p: DesiredPort): string[] | undefined => m.get(learnKey(p.owner.uuid, p.mac))?.addresses.map((a) => a.ip);

describe('learning mode of a port', () => {
  it('reads CTRL_IP_LEARNING as libvirt does; a given IP or none does not learn', () => {
    expect([ANY, DHCP, STATIC, NONE].map((p) => learnModeOf(p.filterref))).toEqual(['any', 'dhcp', undefined, undefined]);
    expect(learnModeOf({ filter: 'f', params: { CTRL_IP_LEARNING: ['bogus'] } })).toBeUndefined();
  });
});

describe('seed decision table (design 4.3)', () => {
  it('load, rollback, restore: the kernel wins when it has the port, else learned.json; static ports get nothing', () => {
    const kernel = [any(ANY, '10.0.0.1', 'kernel')];
    const state = [any(ANY, '10.0.0.99'), dhcp(DHCP, [['10.0.0.2', LATER]]), any(STATIC, '10.0.0.77'), any(OTHER, '10.0.0.9')];
    const s = seedsForLoad([ANY, DHCP, STATIC, NONE, OTHER], kernel, state, NOW);
    expect(ips(s, ANY)).toEqual(['10.0.0.1']);
    expect(s.get(learnKey(U1, ANY.mac))?.addresses[0]?.source).toBe('kernel');
    expect(ips(s, DHCP)).toEqual(['10.0.0.2']);
    expect(ips(s, STATIC)).toBeUndefined();
    expect(ips(s, NONE)).toBeUndefined();
    expect(ips(s, OTHER)).toEqual(['10.0.0.9']);
    expect([...s.keys()].sort()).toEqual([learnKey(U1, ANY.mac), learnKey(U1, DHCP.mac), learnKey(U2, OTHER.mac)].sort());
  });

  it('an expired dhcp lease is never seeded, a live one of the same port is', () => {
    const state = [dhcp(DHCP, [['10.0.0.2', EARLIER], ['10.0.0.5', LATER]])];
    expect(ips(seedsForLoad([DHCP], [], state, NOW), DHCP)).toEqual(['10.0.0.5']);
    expect(seedsForLoad([DHCP], [], [dhcp(DHCP, [['10.0.0.2', EARLIER]])], NOW).size).toBe(0);
    // the kernel's expired lease does not hide a live one on disk either
    expect(ips(seedsForLoad([DHCP], [dhcp(DHCP, [['10.0.0.2', EARLIER]], 'kernel')], state, NOW), DHCP)).toEqual(['10.0.0.5']);
  });

  it('a seed of another mode is not used (the metadata is a hint, not a policy)', () => {
    expect(seedsForLoad([DHCP], [], [any(DHCP, '10.0.0.2')], NOW).size).toBe(0);
    expect(seedsForStart([ANY], [dhcp(ANY, [['10.0.0.2', LATER]], 'metadata')], [], true, NOW).seeds.size).toBe(0);
  });

  it('start after migrate/restore begin: the metadata, else learned.json', () => {
    const meta = [any(ANY, '10.72.0.11', 'metadata')];
    const state = [any(ANY, '10.0.0.99'), dhcp(DHCP, [['10.0.0.2', LATER]])];
    const r = seedsForStart([ANY, DHCP, STATIC], meta, state, true, NOW);
    expect(ips(r.seeds, ANY)).toEqual(['10.72.0.11']);
    expect(r.seeds.get(learnKey(U1, ANY.mac))?.addresses[0]?.source).toBe('metadata');
    expect(ips(r.seeds, DHCP)).toEqual(['10.0.0.2']);
    // the seeds are recorded: the metadata's address replaces the old one of the same port
    expect(r.state.map((e) => [e.mac, e.addresses.map((a) => [a.ip, a.source])])).toEqual([
      [ANY.mac, [['10.72.0.11', 'metadata']]],
      [DHCP.mac, [['10.0.0.2', 'state']]],
    ]);
    expect(r.notes).toEqual(['vnet0 (52:54:00:00:00:01, any) seeded from metadata: 10.72.0.11', 'vnet1 (52:54:00:00:00:02, dhcp) seeded from state: 10.0.0.2']);
  });

  it('metadata for a MAC the domain does not have, or of another domain, seeds nothing', () => {
    const stray = { ...any(ANY, '10.0.0.50', 'metadata'), mac: '52:54:00:ff:ff:ff' };
    const foreign = { ...any(ANY, '10.0.0.51', 'metadata'), owner: { name: 'vm2', uuid: U2 } };
    expect(seedsForStart([ANY], [stray, foreign], [], true, NOW).seeds.size).toBe(0);
  });

  it('fresh boot: dhcp gets its unexpired leases, any gets nothing and its old address is dropped', () => {
    const state = [any(ANY, '10.0.0.99'), dhcp(DHCP, [['10.0.0.2', LATER], ['10.0.0.3', EARLIER]]), any(OTHER, '10.0.0.9')];
    const r = seedsForStart([ANY, DHCP], [any(ANY, '10.72.0.11', 'metadata')], state, false, NOW);
    expect(ips(r.seeds, ANY)).toBeUndefined();
    expect(ips(r.seeds, DHCP)).toEqual(['10.0.0.2']);
    expect(r.state.map((e) => e.mac).sort()).toEqual([DHCP.mac, OTHER.mac]);
  });

  it('a hook start: the starting domain takes its start seeds (never its kernel leftovers), the others the load rule', () => {
    const kernel = [any(ANY, '10.0.0.66', 'kernel'), any(OTHER, '10.0.0.9', 'kernel')];
    const start = seedsForStart([ANY], [], [], false, NOW);
    const s = seedsForChange([ANY, OTHER], kernel, [], { uuid: U1, seeds: start }, NOW);
    expect(ips(s, ANY)).toBeUndefined();
    expect(ips(s, OTHER)).toEqual(['10.0.0.9']);
    const incoming = seedsForStart([ANY], [any(ANY, '10.72.0.11', 'metadata')], [], true, NOW);
    expect(ips(seedsForChange([ANY, OTHER], kernel, [], { uuid: U1, seeds: incoming }, NOW), ANY)).toEqual(['10.72.0.11']);
  });

  it('stop: the kernel state is recorded over learned.json, other entries stay, expired leases go', () => {
    const state = [any(ANY, '10.0.0.99'), any(OTHER, '10.0.0.9'), dhcp(DHCP, [['10.0.0.2', EARLIER]])];
    const next = recordKernel(state, [any(ANY, '10.0.0.1', 'kernel')], NOW);
    expect(next.map((e) => [e.mac, e.addresses.map((a) => a.ip)])).toEqual([
      [ANY.mac, ['10.0.0.1']],
      [OTHER.mac, ['10.0.0.9']],
    ]);
    expect(sameLearned(next, state)).toBe(false);
    expect(sameLearned(recordKernel(next, [], NOW), next)).toBe(true);
  });
});

describe('learned.json', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'nwf-learned-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('round-trips, sorted by key, entries without addresses left out; read back as source state', () => {
    expect(readLearned(dir)).toEqual([]);
    writeLearned(dir, [any(OTHER, '10.0.0.9', 'kernel'), dhcp(DHCP, [['10.0.0.2', LATER]], 'kernel'), { ...any(ANY, '1.1.1.1'), addresses: [] }]);
    const back = readLearned(dir);
    expect(back.map((e) => e.mac)).toEqual([DHCP.mac, OTHER.mac]);
    expect(back.flatMap((e) => e.addresses.map((a) => a.source))).toEqual(['state', 'state']);
    expect(JSON.parse(readFileSync(join(dir, LEARNED_FILE), 'utf8')).format).toBe('nwf-fast-learned/1');
  });

  it.each([
    ['{', /unreadable/],
    ['{"format":"other","entries":[]}', /unknown format/],
    ['{"format":"nwf-fast-learned/1","entries":[{"owner":{"name":"a","uuid":"b"},"mac":"52:54:00:00:00:01","mode":"any","addresses":[{"ip":"10.0.0.300","source":"kernel"}]}]}', /entry 1 is malformed/],
    ['{"format":"nwf-fast-learned/1","entries":[{"owner":{"name":"a","uuid":"b"},"mac":"52:54:00:00:00:01","mode":"static","addresses":[]}]}', /entry 1 is malformed/],
  ])('refuses a damaged file %#', (text, message) => {
    writeFileSync(join(dir, LEARNED_FILE), text);
    const e = nwfErrorOf(() => readLearned(dir));
    expect(e.code).toBe('NWF1403');
    expect(e.message).toMatch(message);
  });

  it('forget DOMAIN [MAC]: by name or UUID, one MAC or all', () => {
    const state = [any(ANY, '10.0.0.1'), dhcp(DHCP, [['10.0.0.2', LATER]]), any(OTHER, '10.0.0.9')];
    expect(forgetEntries(state, 'vm1').state.map((e) => e.mac)).toEqual([OTHER.mac]);
    expect(forgetEntries(state, U1.toUpperCase(), '52:54:00:00:00:02').removed.map((e) => e.mac)).toEqual([DHCP.mac]);
    expect(forgetEntries(state, 'nope').removed).toEqual([]);
  });

  it('nwf-fast forget: removes the entries, warns (exit 1) for a running port, refuses a bad MAC', async () => {
    writeLearned(dir, [any(ANY, '10.0.0.1'), dhcp(DHCP, [['10.0.0.2', LATER]]), any(OTHER, '10.0.0.9')]);
    const one = await run(['forget', 'vm1', '52:54:00:00:00:02', '--state-dir', dir]);
    expect(one).toMatchObject({ code: 0, err: '' });
    expect(one.out).toMatch(/^forgot vm1 52:54:00:00:00:02 \(dhcp\): 10\.0\.0\.2 until /);
    expect(readLearned(dir).map((e) => e.mac)).toEqual([ANY.mac, OTHER.mac]);
    writePorts(dir, [ANY]);
    const all = await run(['forget', U1, '--state-dir', dir]);
    expect(all.code).toBe(1);
    expect(all.err).toMatch(/vnet0 of vm1 is running: the kernel keeps its learned address/);
    expect(readLearned(dir).map((e) => e.mac)).toEqual([OTHER.mac]);
    expect((await run(['forget', 'vm1', '--state-dir', dir])).out).toMatch(/nothing learned is recorded for vm1/);
    expect((await run(['forget', 'vm2', 'zz', '--state-dir', dir])).code).toBe(2);
  });

  it('incoming notes: taken once, and only while young', () => {
    expect(takeIncoming(dir, U1, NOW)).toBeUndefined();
    noteIncoming(dir, U2, 'vm2', 'restore', NOW - INCOMING_TTL_MS - 1);
    noteIncoming(dir, U1.toUpperCase(), 'vm1', 'migrate', NOW);
    expect(takeIncoming(dir, U1, NOW + 1000)?.op).toBe('migrate');
    expect(takeIncoming(dir, U1, NOW + 1000)).toBeUndefined();
    expect(takeIncoming(dir, U2, NOW)).toBeUndefined();
    writeFileSync(join(dir, INCOMING_FILE), 'garbage');
    expect(takeIncoming(dir, U1, NOW)).toBeUndefined();
  });
});

describe('status of the learning ports', () => {
  it('locked or learning from the kernel; unknown (learned.json shown) when the kernel cannot be read', () => {
    const state = [any(ANY, '10.0.0.99'), any(OTHER, '10.0.0.9')];
    const s = learningStatus([ANY, DHCP, STATIC], [any(ANY, '10.0.0.1', 'kernel')], state, NOW);
    expect(s.ports.map((p) => [p.tap, p.mode, p.state, p.addresses.map((a) => a.ip)])).toEqual([
      ['vnet0', 'any', 'locked', ['10.0.0.1']],
      ['vnet1', 'dhcp', 'learning', []],
    ]);
    expect(s.stored).toBe(1);
    const u = learningStatus([ANY, DHCP], undefined, state, NOW);
    expect(u.kernelRead).toBe(false);
    expect(u.ports.map((p) => [p.state, p.addresses.map((a) => a.ip)])).toEqual([
      ['unknown', ['10.0.0.99']],
      ['unknown', []],
    ]);
  });
});
