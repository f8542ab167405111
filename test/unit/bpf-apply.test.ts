// Which generation changes may be applied as in-place eBPF value updates.
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { StoredBpf, StoredBpfInterface } from '../../src/compile.js';
import { shapeIndex, updateBpfInPlace } from '../../src/host/bpf-apply.js';

const tap = (iface: string, shapeId: string, value: string): StoredBpfInterface => ({
  iface,
  shapeId,
  object: `bpf/${shapeId}.bpf.o`,
  programs: { out: 'nwf_out', in: 'nwf_in' },
  xdpProgram: 'nwf_out_xdp',
  hooks: { out: 'ingress', in: 'egress' },
  maps: [{ map: 'nwf_cfg', key: '00000000', value }],
});

const gen = (interfaces: StoredBpfInterface[]): StoredBpf => ({
  format: 'nwf-fast-bpf/2',
  interfaces,
  shapes: [...new Set(interfaces.map((i) => i.shapeId))].map((s) => ({ shapeId: s, object: `bpf/${s}.bpf.o`, interfaces: interfaces.filter((i) => i.shapeId === s).map((i) => i.iface) })),
});

// Pins that exist as files but are not BPF maps: an update that gets as far
// as opening them throws, one refused beforehand returns false.
const pinDir = mkdtempSync(join(tmpdir(), 'nwf-pins-'));
mkdirSync(join(pinDir, 'shape-aa'));
for (const f of ['cfg', 'slot', 'stats', 'ifx']) writeFileSync(join(pinDir, 'shape-aa', f), '');
afterAll(() => rmSync(pinDir, { recursive: true, force: true }));

describe('eBPF in-place updates', () => {
  it('indexes taps by their position within their shape', () => {
    const idx = shapeIndex(gen([tap('vnet0', 'aa', '01'), tap('vnet1', 'bb', '02'), tap('vnet2', 'aa', '03')]));
    expect(idx.get('vnet0')).toEqual({ shapeId: 'aa', index: 0 });
    expect(idx.get('vnet1')).toEqual({ shapeId: 'bb', index: 0 });
    expect(idx.get('vnet2')).toEqual({ shapeId: 'aa', index: 1 });
  });

  it('refuses when a tap would move to another index of its shape object', () => {
    const prev = gen([tap('vnet0', 'aa', '01'), tap('vnet1', 'aa', '02')]);
    const next = gen([tap('vnet1', 'aa', '02'), tap('vnet0', 'aa', '09')]);
    expect(updateBpfInPlace(prev, next, pinDir)).toBe(false);
  });

  it('refuses other shapes or other taps', () => {
    const prev = gen([tap('vnet0', 'aa', '01')]);
    expect(updateBpfInPlace(prev, gen([tap('vnet0', 'bb', '01')]), pinDir)).toBe(false);
    expect(updateBpfInPlace(prev, gen([tap('vnet9', 'aa', '01')]), pinDir)).toBe(false);
    expect(updateBpfInPlace(prev, gen([tap('vnet0', 'aa', '01'), tap('vnet1', 'aa', '01')]), pinDir)).toBe(false);
  });

  it('has nothing to write when no value changed', () => {
    const prev = gen([tap('vnet0', 'aa', '01'), tap('vnet1', 'aa', '02')]);
    expect(updateBpfInPlace(prev, gen([tap('vnet0', 'aa', '01'), tap('vnet1', 'aa', '02')]), pinDir)).toBe(true);
  });

  it('writes through the pins when the taps keep their indexes (here: pins that are not maps, so it throws)', () => {
    const prev = gen([tap('vnet0', 'aa', '01'), tap('vnet1', 'aa', '02')]);
    const next = gen([tap('vnet0', 'aa', '09'), tap('vnet1', 'aa', '02')]);
    expect(() => updateBpfInPlace(prev, next, pinDir)).toThrow();
  });
});
