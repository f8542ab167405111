// Instantiation by parameter shape (src/resolve/shape.ts): the later
// interfaces of one (template, parameter shape) are copies of the first one's
// policy with their own values. The PolicyIR must be exactly the one of the
// full path, over every corpus and randomized hosts (lists of addresses with
// repeats, learning ports, ports without IP, IPv6, DHCP server lists), and
// values that do not parse or that the layout reads other than as addresses
// must give the full path's result and errors.
import { describe, expect, it } from 'vitest';
import { resolvePolicy, type ResolveOptions } from '../../src/resolve/resolve.js';
import type { InterfaceBinding } from '../../src/xml/ast.js';
import { parseFilterBindingXml } from '../../src/xml/parse-binding.js';
import { parseFilterXml } from '../../src/xml/parse-filter.js';
import { resolveCorpus } from '../support/resolve-corpus.js';
import { lowerToNft } from '../../src/backends/nft/lower.js';
import { toNftJson } from '../../src/backends/nft/serialize.js';
import { randomHost } from '../support/random-host.js';
import { bindingXml, bundledFilters } from '../support/policy.js';
import { rng } from '../support/rng.js';
import { MAX_SHAPE_LIST, shapeStats } from '../../src/resolve/shape.js';

type Filters = ReturnType<typeof bundledFilters>;

/** The policy and the per-interface errors (code, interface, message), with the shape path on or off. */
function resolved(filters: Filters, bindings: InterfaceBinding[], byShape: boolean): string {
  const errors: string[] = [];
  const opts: ResolveOptions = { byShape, onInterfaceError: (b, e) => errors.push(`${b.iface} ${e.code} ${e.message} ${JSON.stringify(e.details ?? {})}`) };
  const ir = resolvePolicy(filters, bindings, [], opts);
  // which objects are frozen (shared by the interfaces of a template) is part of the result: the backends key on it
  const marked = (_k: string, v: unknown): unknown => (v !== null && typeof v === 'object' && Object.isFrozen(v) ? { frozen: Array.isArray(v) ? [...v] : { ...v } } : v);
  return JSON.stringify({ ir, errors }, marked);
}

function expectSame(filters: Filters, bindings: InterfaceBinding[]): void {
  expect(resolved(filters, bindings, true)).toBe(resolved(filters, bindings, false));
}

const bind = (i: number, mac: string, filter: string, params: Record<string, string | string[]>): InterfaceBinding =>
  parseFilterBindingXml(bindingXml(`vnet${i}`, mac, filter, params), `b${i}.xml`);

describe('instantiation by parameter shape equals the full path', () => {
  it.each(resolveCorpus())('$name', ({ filters, bindings }) => {
    expectSame(filters, bindings);
  });

  it.each([1, 2, 3, 4, 5, 6, 7, 8])('a randomized host (seed %i)', (seed) => {
    const { filters, bindings } = randomHost(seed, 300);
    const before = shapeStats.copied;
    expectSame(filters, bindings);
    // most interfaces repeat a shape seen before
    expect(shapeStats.copied - before).toBeGreaterThan(100);
  });

  it.each([1, 2, 3])('the nft lowering of a randomized host is the same (seed %i)', (seed) => {
    const { filters, bindings } = randomHost(seed, 200);
    const lowered = (byShape: boolean): string => {
      const l = lowerToNft(resolvePolicy(filters, bindings, [], { byShape, onInterfaceError: () => {} }), { strict: false });
      return JSON.stringify({ parts: l.parts, failed: l.failed, opt: l.opt, batch: toNftJson(l.batch) });
    };
    expect(lowered(true)).toBe(lowered(false));
  });

  it('randomized lists: lengths, repeats in every pattern, upper case, IPv6, several list parameters', () => {
    const filters = bundledFilters();
    const r = rng(42);
    const pick = <T,>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)] as T;
    const v4 = ['10.0.0.1', '10.0.0.2', '10.0.0.3', '0.0.0.0', '10.0.0.01'];
    const v6 = ['fd00::1', 'FD00::1', 'fd00:0::1', 'fe80::2'];
    const list = (xs: readonly string[]): string[] => Array.from({ length: 1 + Math.floor(r() * 4) }, () => pick(xs));
    const bindings: InterfaceBinding[] = [];
    for (let i = 0; i < 400; i++) {
      const mac = pick(['52:54:00:00:00:01', '52:54:00:AA:00:02', '52:54:0:0:0:3']);
      const k = i % 4;
      if (k === 0) bindings.push(bind(i, mac, 'clean-traffic', { IP: list(v4) }));
      else if (k === 1) bindings.push(bind(i, mac, 'no-ipv6-spoofing', { IPV6: list(v6) }));
      else if (k === 2) bindings.push(bind(i, mac, 'allow-dhcp-server', { DHCPSERVER: list(v4) }));
      else bindings.push(bind(i, mac, 'clean-traffic-gateway', { IP: list(v4), GATEWAY_MAC: pick(['52:54:00:00:00:fe', '52:54:00:00:00:FE']) }));
    }
    const before = shapeStats.copied;
    expectSame(filters, bindings);
    expect(shapeStats.copied - before).toBeGreaterThan(200);
  });

  it('a value that does not parse, in a shape seen before, fails as on the full path', () => {
    const filters = bundledFilters();
    const bindings = [bind(0, '52:54:00:00:00:01', 'clean-traffic', { IP: '10.0.0.1' }), bind(1, '52:54:00:00:00:02', 'clean-traffic', { IP: '10.0.0.300' }), bind(2, '52:54:00:00:00:03', 'no-ip-spoofing', { IP: 'fd00::1' })];
    const on = resolved(filters, bindings, true);
    expect(on).toBe(resolved(filters, bindings, false));
    expect(JSON.parse(on).errors).toHaveLength(2);
  });

  it('a port value read other than as an address (a mask, a port number) keeps its shape on the full path', () => {
    const filters = bundledFilters();
    for (const x of [
      `<filter name='masked' chain='root'><rule action='accept' direction='out' priority='100'><ip srcipaddr='$IP' srcipmask='$MASK'/></rule></filter>`,
      `<filter name='ports' chain='ipv4'><rule action='accept' direction='out' priority='100'><tcp dstportstart='$LO' dstportend='$HI'/></rule></filter>`,
    ]) {
      const d = parseFilterXml(x, 'x.xml');
      filters.set(d.name, d);
    }
    const bindings = [
      bind(0, '52:54:00:00:00:01', 'masked', { IP: '10.0.0.1', MASK: '24' }),
      bind(1, '52:54:00:00:00:02', 'masked', { IP: '10.0.0.2', MASK: '16' }),
      bind(2, '52:54:00:00:00:03', 'masked', { IP: '10.0.0.2', MASK: '40' }),
      bind(3, '52:54:00:00:00:04', 'ports', { LO: '10', HI: '20' }),
      bind(4, '52:54:00:00:00:05', 'ports', { LO: '30', HI: '20' }),
    ];
    const before = shapeStats.copied;
    const on = resolved(filters, bindings, true);
    expect(shapeStats.copied - before).toBe(0);
    expect(on).toBe(resolved(filters, bindings, false));
    expect(JSON.parse(on).errors).toHaveLength(2);
  });

  it('interfaces with a list longer than MAX_SHAPE_LIST take the full path, with the same result', () => {
    const filters = bundledFilters();
    const ips = (base: number): string[] => Array.from({ length: MAX_SHAPE_LIST + 1 }, (_, i) => `10.${base}.${i >> 8}.${i & 255}`);
    const bindings = [bind(0, '52:54:00:00:00:01', 'clean-traffic', { IP: ips(1) }), bind(1, '52:54:00:00:00:02', 'clean-traffic', { IP: ips(2) })];
    const before = shapeStats.copied;
    expectSame(filters, bindings);
    expect(shapeStats.copied - before).toBe(0);
  });

  it("copies are each interface's own: per-port rules are new objects, shared ones the same", () => {
    const filters = bundledFilters();
    const ir = resolvePolicy(filters, [bind(0, '52:54:00:00:00:01', 'clean-traffic', { IP: '10.0.0.1' }), bind(1, '52:54:00:00:00:02', 'clean-traffic', { IP: '10.0.0.2' })]);
    const [a, b] = ir.interfaces;
    const ma = a?.l2.out.chains.find((c) => c.name === 'mac')?.rules[0];
    const mb = b?.l2.out.chains.find((c) => c.name === 'mac')?.rules[0];
    expect(ma?.match).toMatchObject({ src: { addr: '52:54:00:00:00:01' } });
    expect(mb?.match).toMatchObject({ src: { addr: '52:54:00:00:00:02' } });
    expect(mb).not.toBe(ma);
    expect(Object.isFrozen(mb)).toBe(false);
    const frozenA = a?.l2.out.root.filter((e) => Object.isFrozen(e));
    expect(frozenA?.length).toBeGreaterThan(0);
    expect(b?.l2.out.root.filter((e) => Object.isFrozen(e))).toEqual(frozenA);
    b?.l2.out.root.filter((e) => Object.isFrozen(e)).forEach((e, i) => expect(e).toBe(frozenA?.[i]));
  });
});
