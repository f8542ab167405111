// The eBPF per-port engine without a kernel: map capacity with room to
// spare, and a shape that must be loaded but whose object is not there
// refuses before anything changes; the nft gate's elements (parsing a
// listing, the host's changes, ignored by the drift check).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BpfCommit, capacityFor, gateInstances } from '../../src/host/bpf-apply.js';
import { DEFAULT_SKELETON_CONFIG, gateElementCommands, lowerSkeleton } from '../../src/backends/nft/skeleton.js';
import { isHostManagedState, isPersistent } from '../../src/backends/nft/names.js';
import { printNftText } from '../../src/backends/nft/printer.js';
import { expectedSnapshot } from '../../src/host/inventory.js';
import { ifIndex } from '../../src/host/netns.js';
import { NwfError } from '../../src/util/errors.js';

const pinDir = mkdtempSync(join(tmpdir(), 'nwf-pins-'));
afterAll(() => rmSync(pinDir, { recursive: true, force: true }));

describe('eBPF shapes', () => {
  it('have room for a quarter more taps than they hold, at least 16, in powers of two', () => {
    expect(capacityFor(0)).toBe(16);
    expect(capacityFor(1)).toBe(16);
    expect(capacityFor(12)).toBe(16);
    expect(capacityFor(13)).toBe(32);
    expect(capacityFor(1000)).toBe(2048);
    for (const n of [1, 5, 50, 500, 5000]) expect(capacityFor(n)).toBeGreaterThanOrEqual(n + Math.max(4, n / 4));
  });

  it('a new shape without its object is refused at prepare, before anything is attached', () => {
    const c = new BpfCommit({ pinDir, prev: {} }, new Map([['vnet0', { want: { shapeId: 'aa', cfg: '00' } }]]), new Map(), () => undefined);
    expect(() => c.prepare()).toThrow(NwfError);
    expect(() => c.prepare()).not.toThrow(); // prepared once: a retry does not load again
  });

  it('slots: a port keeps its slot while it stays in its shape; a new one takes the lowest free slot', () => {
    const prev = { aa: { capacity: 16, objectSha256: 'x', progIds: { out: 1, in: 2 }, members: { vnet0: 0, vnet1: 1, vnet2: 2 } } };
    // vnet1 leaves, vnet3 joins: pins are not there, so prepare wants to load the shape again and refuses (no object)
    const c = new BpfCommit({ pinDir, prev }, new Map([
      ['vnet1', { want: null, before: { shapeId: 'aa', index: 1, cfg: '00' } }],
      ['vnet3', { want: { shapeId: 'aa', cfg: '01' } }],
    ]), new Map(), () => undefined);
    expect(() => c.prepare()).toThrow(/object of shape aa/);
    expect(c.nextState.aa?.members).toEqual({ vnet0: 0, vnet2: 2, vnet3: 1 });
  });
});

describe('the nft gate of eBPF-enforced ports (backends/nft/skeleton.ts)', () => {
  it('its listed elements: an ifindex nft prints as a number, or as the name of the device that has it now (resolved back)', () => {
    const lo = ifIndex('lo');
    const g = gateInstances([{ concat: ['vnet0', '17'] }, { concat: ['vnet0', 18] }, { concat: ['vnet1', 'lo'] }, { concat: ['vnet2', 'no-such-dev0'] }, 'junk', { concat: ['x'] }]);
    expect([...g.entries()].map(([k, v]) => [k, [...v].sort()])).toEqual([
      ['vnet0', [17, 18]],
      ['vnet1', [lo]],
    ]);
  });

  it("the host's element changes: additions, and each removal as an add and a delete (it cannot fail on an absent element)", () => {
    const text = printNftText(gateElementCommands([{ iface: 'vnet0', ifindex: 7 }], [{ iface: 'vnet0', ifindex: 3 }]));
    expect(text.trim().split('\n')).toEqual([
      'add element bridge nwf_fast gate-on { "vnet0" . 7 }',
      'add element bridge nwf_fast gate-on { "vnet0" . 3 }',
      'delete element bridge nwf_fast gate-on { "vnet0" . 3 }',
    ]);
    expect(gateElementCommands([], [])).toEqual([]);
  });

  it("its elements are host state: the drift check ignores them, not the set's definition", () => {
    const skeleton = lowerSkeleton({ ...DEFAULT_SKELETON_CONFIG, gate: true }, []);
    const expected = expectedSnapshot(skeleton);
    const key = [...expected.keys()].find((k) => k.includes('gate-on')) as string;
    expect(key).toBeDefined();
    const withElements = expectedSnapshot([...skeleton, ...gateElementCommands([{ iface: 'vnet0', ifindex: 7 }], [])]);
    expect(withElements.get(key)).toBe(expected.get(key));
    expect(isHostManagedState('gate-on')).toBe(true);
    expect(isHostManagedState('gate_from_vm')).toBe(false);
    expect(isPersistent('gate-on')).toBe(true);
    expect(isPersistent('gatec-out')).toBe(false);
  });

  it('a commit that attaches nothing changes nothing in the gate', () => {
    const c = new BpfCommit({ pinDir, prev: {} }, new Map(), new Map(), () => undefined);
    expect(c.gateChanges()).toEqual({ add: [], remove: [] });
  });
});
