// --backend both, dhcp ports: the copy of the eBPF program's leases into the
// nft line's learned-state sets (src/host/learn/copy-leases.ts), against a
// recorded nft listing: nothing written when in step, the port's elements
// written again (old ones removed in the same transaction) on a new lease, a
// renewal or a release; timeouts are the leases' remaining seconds.
import { describe, expect, it } from 'vitest';
import { leaseSync, MAX_COPY_TIMEOUT_S } from '../../src/host/learn/copy-leases.js';
import { toNftJson } from '../../src/backends/nft/serialize.js';
import { RecordingRunner } from '../../src/host/runner.js';
import type { LearnedAddress } from '../../src/ir/learning.js';
import { INFINITE_EXPIRES } from '../../src/host/learn/seed.js';

const NOW = Date.parse('2026-06-01T00:00:00Z');
const at = (s: number): string => new Date(NOW + s * 1000).toISOString();
const lease = (ip: string, expires: string): LearnedAddress => ({ ip, expires, source: 'kernel' });

/** A runner whose `nft -j list set` shows the tap's lease set with `elems`. */
function listing(elems: unknown[]): RecordingRunner {
  return new RecordingRunner(() => ({ stdout: JSON.stringify({ nftables: [{ metainfo: {} }, { set: { family: 'bridge', name: 'lrn-lease-vnet0', table: 'nwf_fast', elem: elems } }] }) }));
}
const el = (ip: string, expires?: number) => (expires === undefined ? ip : { elem: { val: ip, timeout: 60, expires } });

describe('copying the eBPF leases into the nft line', () => {
  it('adds a new lease with its remaining time, locks the port for the longest', async () => {
    const r = await leaseSync(['vnet0'], new Map([['vnet0', [lease('10.0.0.2', at(60)), lease('10.0.0.3', at(30))]]]), { runner: listing([]) }, NOW);
    expect(r.ports).toEqual(['vnet0']);
    const json = JSON.stringify(toNftJson(r.cmds));
    expect(json).toContain('{"elem":{"val":"10.0.0.2","timeout":60,');
    expect(json).toContain('{"elem":{"val":"10.0.0.3","timeout":30,');
    expect(json).toContain('{"elem":{"val":"vnet0","timeout":60,');
    expect(json).not.toContain('"delete"');
  });

  it('in step (within a few seconds): nothing written', async () => {
    const r = await leaseSync(['vnet0'], new Map([['vnet0', [lease('10.0.0.2', at(60))]]]), { runner: listing([el('10.0.0.2', 58)]) }, NOW);
    expect(r).toEqual({ cmds: [], ports: [] });
  });

  it('a renewal or a release writes the port again: the old elements go in the same transaction', async () => {
    const renewed = await leaseSync(['vnet0'], new Map([['vnet0', [lease('10.0.0.2', at(3600))]]]), { runner: listing([el('10.0.0.2', 50)]) }, NOW);
    const ops = toNftJson(renewed.cmds).nftables.map((c) => Object.keys(c)[0]).filter((k) => k !== 'metainfo');
    expect(ops).toEqual(['add', 'add', 'delete', 'delete', 'add', 'add']);
    expect(JSON.stringify(renewed.cmds)).toContain('lrn-lease-vnet0');
    const released = await leaseSync(['vnet0'], new Map([['vnet0', []]]), { runner: listing([el('10.0.0.2', 50)]) }, NOW);
    expect(toNftJson(released.cmds).nftables.map((c) => Object.keys(c)[0]).filter((k) => k !== 'metainfo')).toEqual(['add', 'add', 'delete', 'delete']);
    expect(released.ports).toEqual(['vnet0']);
  });

  it('an infinite lease has no timeout; a very long one is capped', async () => {
    const r = await leaseSync(['vnet0'], new Map([['vnet0', [lease('10.0.0.2', INFINITE_EXPIRES), lease('10.0.0.3', at(400 * 86400))]]]), { runner: listing([]) }, NOW);
    const json = JSON.stringify(toNftJson(r.cmds));
    expect(json).toContain('{"elem":{"val":"10.0.0.2","comment"');
    expect(json).toContain(`"timeout":${MAX_COPY_TIMEOUT_S}`);
    expect(json).toContain('{"elem":{"val":"vnet0","comment"'); // locked with no timeout
  });

  it('a lease longer than the cap is not written again every poll, only once a day of its capped element has gone', async () => {
    const long = new Map([['vnet0', [lease('10.0.0.2', at(30 * 86400))]]]);
    expect(await leaseSync(['vnet0'], long, { runner: listing([el('10.0.0.2', MAX_COPY_TIMEOUT_S - 600)]) }, NOW)).toEqual({ cmds: [], ports: [] });
    expect((await leaseSync(['vnet0'], long, { runner: listing([el('10.0.0.2', MAX_COPY_TIMEOUT_S - 86400 - 1)]) }, NOW)).ports).toEqual(['vnet0']);
  });

  it('no lease set (no table, or not a dhcp port of the nft line): nothing to copy into', async () => {
    const failing = new RecordingRunner(() => ({ exitCode: 1, stderr: 'No such file or directory' }));
    expect(await leaseSync(['vnet0'], new Map([['vnet0', [lease('10.0.0.2', at(60))]]]), { runner: failing }, NOW)).toEqual({ cmds: [], ports: [] });
  });
});
