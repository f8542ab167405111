import { describe, expect, it } from 'vitest';
import { lowerToNft } from '../../src/backends/nft/lower.js';
import { toNftJson } from '../../src/backends/nft/serialize.js';
import { elementDelta } from '../../src/host/delta.js';
import { policyFor } from '../support/policy.js';

const doc = (ips: string[], extra = false) =>
  toNftJson(
    lowerToNft({
      version: 1,
      interfaces: [
        policyFor('clean-traffic', { IP: ips }),
        policyFor('clean-traffic', { IP: '10.0.0.9' }, [], { iface: 'vnet1', mac: '52:54:00:00:00:02' }),
        ...(extra ? [policyFor('clean-traffic', { IP: '10.0.0.10' }, [], { iface: 'vnet2', mac: '52:54:00:00:00:03' })] : []),
      ],
      notes: [],
    }).batch,
  );

describe('incremental loads (element deltas)', () => {
  it("a VM's IP change is a few element deletions and additions", () => {
    const d = elementDelta(doc(['10.0.0.2']), doc(['10.0.0.5']));
    expect(d).toBeDefined();
    const ops = (d?.nftables ?? []).slice(1).map((c) => Object.keys(c)[0]);
    expect(ops.length).toBeGreaterThan(0);
    expect(new Set(ops)).toEqual(new Set(['delete', 'add']));
    const text = JSON.stringify(d);
    expect(text).toContain('10.0.0.2');
    expect(text).toContain('10.0.0.5');
    expect(text).not.toContain('10.0.0.9');
    expect(text).not.toContain('"rule"');
  });
  it('no change gives an empty delta', () => {
    expect(elementDelta(doc(['10.0.0.2']), doc(['10.0.0.2']))?.nftables).toHaveLength(1);
  });
  it('a new interface (new counters and chains) is not a delta', () => {
    expect(elementDelta(doc(['10.0.0.2']), doc(['10.0.0.2'], true))).toBeUndefined();
  });
});
