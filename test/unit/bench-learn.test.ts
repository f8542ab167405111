// The learn phase of the benchmark (bench/lib/learn.ts): reading libvirt's
// rules (learning or locked) and judging its target row.
import { describe, expect, it } from 'vitest';
import { learningRulesInForce, lockedAddress, type LearnResult, type LearnRow } from '../../bench/lib/learn.js';
import { targets } from '../../bench/lib/report.js';
import { stat } from '../../bench/lib/util.js';
import type { BenchResults } from '../../bench/run.js';

// libvirt 9.0's rules for vnet0 while learning (observed under both chain names) and once locked (abridged).
const learning = (chain: 'I' | 'J'): string =>
  [
    `:libvirt-${chain}-vnet0 ACCEPT`,
    `-A PREROUTING -i vnet0 -j libvirt-${chain}-vnet0`,
    `-A libvirt-${chain}-vnet0 -s ! 52:54:00:00:00:01 -j DROP`,
    `-A libvirt-${chain}-vnet0 -p IPv4 -j ACCEPT`,
    `-A libvirt-${chain}-vnet0 -p ARP -j ACCEPT`,
    `-A libvirt-${chain}-vnet0 -j DROP`,
  ].join('\n');
const locked = [
  ':libvirt-I-vnet0 ACCEPT',
  '-A PREROUTING -i vnet0 -j libvirt-I-vnet0',
  '-A libvirt-I-vnet0 -j I-vnet0-mac',
  '-A libvirt-I-vnet0 -p IPv4 -j I-vnet0-ipv4-ip',
  '-A I-vnet0-ipv4-ip -p IPv4 --ip-src 0.0.0.0 --ip-proto udp -j RETURN',
  '-A I-vnet0-ipv4-ip -p IPv4 --ip-src 10.1.0.1 -j RETURN',
  '-A I-vnet0-arp-ip -p ARP --arp-ip-src 10.1.0.1 -j RETURN',
].join('\n');

describe('bench learn: libvirt rules', () => {
  it('the learning rules are recognised under either chain name, and carry no address', () => {
    expect(learningRulesInForce(learning('J'))).toBe(true);
    expect(learningRulesInForce(learning('I'))).toBe(true);
    expect(lockedAddress(learning('J'))).toBeUndefined();
  });
  it('no rules, or the full filter, are not the learning rules', () => {
    expect(learningRulesInForce('')).toBe(false);
    expect(learningRulesInForce(locked)).toBe(false);
    // a chain accepting IPv4 that PREROUTING does not jump to is not in force
    expect(learningRulesInForce(learning('J').replace(/-A PREROUTING.*\n/, ''))).toBe(false);
  });
  it('the locked address is the one --ip-src names, 0.0.0.0 aside', () => {
    expect(lockedAddress(locked)).toBe('10.1.0.1');
  });
});

function row(method: LearnRow['method'], delivered: number[], legit: [number, number], learnedRight = delivered.length): LearnRow {
  return {
    method,
    rounds: delivered.map((d) => ({ setupMs: 1, teachDelivered: true, spoofSent: 5000, spoofDelivered: d, legitSent: 1, legitDelivered: 1, floodMs: 1500, reads: 1 })),
    spoofSent: stat(delivered.map(() => 5000)),
    spoofDelivered: stat(delivered),
    lastLeakMs: stat(delivered.filter((d) => d > 0).map(() => 1200)),
    firstDropMs: stat([]),
    readableMs: stat([0.3]),
    readStartMs: stat([0.1]),
    setupMs: stat([1]),
    legitSent: legit[0],
    legitDelivered: legit[1],
    learnedRight,
  };
}

function results(rows: LearnRow[], libvirt: LearnResult['libvirt'] = { available: true }): BenchResults {
  const learn: LearnResult = { rows, libvirt, rounds: 2, floodMs: 1500, maxMs: 8000, spoofPerMs: 5, legitPerMs: 1, teachIp: '10.1.0.1', spoofIp: '10.253.0.66', loadavg: { start: [1, 1, 1], end: [1, 1, 1] } };
  return { schema: 1, mode: 'quick', startedAt: '', durationS: 0, config: { ns: [1, 1000] } as BenchResults['config'], env: {} as BenchResults['env'], brNetfilterDefault: true, learn, errors: [], notes: [] };
}

const learnTargets = (r: BenchResults) => targets(r).filter((t) => t.name.startsWith('IP learning'));

describe('bench learn: the target row', () => {
  it('met with 0 spoofed frames delivered, every legitimate frame delivered and the taught address learned; libvirt side by side', () => {
    const t = learnTargets(results([row('nft', [0, 0], [10, 10]), row('ebpf', [0, 0], [10, 10]), row('libvirt', [900, 700], [10, 10])]));
    expect(t.map((x) => x.met)).toEqual([true, true]);
    expect(t[0]?.libvirt).toMatch(/^800 \(700–900\) of 5000 .*delivered; the last one sent/);
  });
  it('not met when one spoofed frame got through, a legitimate frame was lost or the wrong address was learned', () => {
    expect(learnTargets(results([row('nft', [0, 1], [10, 10]), row('ebpf', [0, 0], [10, 9])])).map((x) => x.met)).toEqual([false, false]);
    expect(learnTargets(results([row('nft', [0, 0], [10, 10], 1)]))[0]?.met).toBe(false);
  });
  it('without the phase n/a; without libvirt the reason', () => {
    expect(learnTargets(results([])).map((x) => x.met)).toEqual([null, null]);
    expect(learnTargets(results([row('nft', [0], [1, 1])], { available: false, reason: '--no-libvirt' }))[0]?.libvirt).toBe('not measured (--no-libvirt)');
  });
});
