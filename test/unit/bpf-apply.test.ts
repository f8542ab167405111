// The eBPF per-port engine without a kernel: map capacity with room to
// spare, and a shape that must be loaded but whose object is not there
// refuses before anything changes.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BpfCommit, capacityFor } from '../../src/host/bpf-apply.js';
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
