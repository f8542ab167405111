// The libvirt hook's dispatch: what each OPERATION SUBOP does with the
// domain XML, its exit codes (a failed start refuses the start, a reconnect
// never fails), and its output (empty, so migrate/restore leave the XML
// unchanged). The live host is a recording fake here; the kernel tests run
// the real one.
import { describe, expect, it } from 'vitest';
import { hookAction, runHook, type HookHost } from '../../src/host/live/hook.js';
import type { ChangeResult } from '../../src/host/live/host.js';
import type { DesiredPort } from '../../src/host/live/ports.js';
import type { LiveDomain } from '../../src/xml/live-domain.js';
import { CODES, NwfError } from '../../src/util/errors.js';

const UUID = '11111111-2222-4333-8444-555555555555';
const XML = `<domain type='kvm'><name>vm1</name><uuid>${UUID}</uuid><devices>
  <interface type='bridge'><mac address='52:54:00:00:00:01'/><source bridge='br0'/><target dev='vnet3'/><filterref filter='clean-traffic'><parameter name='IP' value='10.0.0.1'/></filterref></interface>
  <interface type='bridge'><mac address='52:54:00:00:00:02'/><source bridge='br0'/><target dev='vnet4'/></interface>
</devices></domain>`;

interface Call {
  what: string;
  args: unknown[];
}

function fakeHost(opts: { fail?: Error; ports?: DesiredPort[]; failNote?: Error } = {}): HookHost & { calls: Call[] } {
  const calls: Call[] = [];
  const ok = (): ChangeResult => ({ added: [], removed: [], warnings: [] });
  return {
    calls,
    locked: async (command, fn) => {
      calls.push({ what: 'lock', args: [command] });
      return fn({ waitedMs: 0 });
    },
    protectDomain: async (d: LiveDomain, source, o) => {
      calls.push({ what: 'protect', args: [d.name, d.uuid, d.interfaces.map((i) => i.tap), source, o?.start ?? false] });
      if (opts.fail) throw opts.fail;
      return ok();
    },
    releaseDomain: async (uuid, taps) => {
      calls.push({ what: 'release', args: [uuid, taps] });
      if (opts.fail) throw opts.fail;
      return ok();
    },
    ports: () => opts.ports ?? [],
    noteIncoming: (d, op) => {
      calls.push({ what: 'incoming', args: [d.uuid, op] });
      if (opts.failNote) throw opts.failNote;
    },
  };
}

describe('hookAction', () => {
  it.each([
    ['start', 'begin', 'protect'],
    ['reconnect', 'begin', 'resync'],
    ['stopped', 'end', 'release'],
    ['release', 'end', 'release'],
    ['migrate', 'begin', 'incoming'],
    ['restore', 'begin', 'incoming'],
    ['prepare', 'begin', 'none'],
    ['started', 'begin', 'none'],
    ['start', 'end', 'none'],
    ['attach', 'begin', 'none'],
  ])('%s %s: %s', (op, subop, action) => {
    expect(hookAction(op, subop)).toBe(action);
  });
});

describe('runHook', () => {
  it('start begin protects the domain from its XML under the lock, prints nothing, exits 0', async () => {
    const h = fakeHost();
    const r = await runHook(h, ['vm1', 'start', 'begin', '-'], XML);
    expect(r).toMatchObject({ exitCode: 0, stdout: '', messages: [] });
    expect(h.calls).toEqual([
      { what: 'lock', args: ['libvirt-hook vm1 start begin'] },
      { what: 'protect', args: ['vm1', UUID, ['vnet3', 'vnet4'], 'hook', true] },
    ]);
    expect(r.logLine).toMatch(/^vm1 start begin: ok in [\d.]+ ms \(lock wait 0.0 ms\)$/);
  });

  it('a start that cannot be protected exits 1 (libvirt refuses the start) with the diagnostic', async () => {
    const h = fakeHost({ fail: new NwfError(CODES.FILTER_UNKNOWN, "unknown filter 'nope'") });
    const r = await runHook(h, ['vm1', 'start', 'begin', '-'], XML);
    expect(r.exitCode).toBe(1);
    expect(r.messages.join('\n')).toContain("error NWF1201: unknown filter 'nope'");
    expect(r.logLine).toMatch(/FAILED/);
  });

  it('bad XML at start: exit 1, nothing done', async () => {
    const h = fakeHost();
    const r = await runHook(h, ['vm1', 'start', 'begin', '-'], '<domain><name>vm1');
    expect(r.exitCode).toBe(1);
    expect(r.messages.join('\n')).toMatch(/NWF1001/);
    expect(h.calls).toEqual([]);
  });

  it('reconnect begin resyncs the domain and exits 0 even when that fails', async () => {
    for (const fail of [undefined, new Error('boom')]) {
      const h = fakeHost(fail ? { fail } : {});
      const r = await runHook(h, ['vm1', 'reconnect', 'begin', '-'], XML);
      expect(r.exitCode).toBe(0);
      expect(r.stdout).toBe('');
      expect(h.calls.map((c) => c.what)).toEqual(['lock', 'protect']);
    }
    const bad = await runHook(fakeHost(), ['vm1', 'reconnect', 'begin', '-'], 'not xml');
    expect(bad.exitCode).toBe(0);
    expect(bad.logLine).toMatch(/reconnect: exit 0 anyway/);
  });

  it('stopped end and release end release the domain by UUID and taps', async () => {
    for (const op of ['stopped', 'release']) {
      const h = fakeHost();
      const r = await runHook(h, ['vm1', op, 'end', '-'], XML);
      expect(r.exitCode).toBe(0);
      expect(h.calls[1]).toEqual({ what: 'release', args: [UUID, ['vnet3', 'vnet4']] });
    }
  });

  it('a release with unusable XML finds the ports by domain name', async () => {
    const port = { tap: 'vnet3', mac: '52:54:00:00:00:01', owner: { name: 'vm1', uuid: UUID }, filterref: { filter: 'f', params: {} }, origin: 'filterref', source: 'hook', at: '' } as const;
    const h = fakeHost({ ports: [port] });
    const r = await runHook(h, ['vm1', 'release', 'end', '-'], '');
    expect(r.exitCode).toBe(0);
    expect(h.calls[1]).toEqual({ what: 'release', args: [UUID, []] });
    expect(r.messages.join('\n')).toMatch(/found by name/);
  });

  it.each(['migrate', 'restore'])('%s begin notes the domain as incoming under the lock, prints nothing, exits 0', async (op) => {
    const h = fakeHost();
    const r = await runHook(h, ['vm1', op, 'begin', '-'], XML);
    expect(r).toMatchObject({ exitCode: 0, stdout: '', messages: [] });
    expect(h.calls).toEqual([
      { what: 'lock', args: [`libvirt-hook vm1 ${op} begin`] },
      { what: 'incoming', args: [UUID, op] },
    ]);
    expect(r.logLine).toMatch(/noted as incoming/);
  });

  it('migrate begin never fails: bad XML or a failing note still exit 0 with nothing printed', async () => {
    const bad = await runHook(fakeHost(), ['vm1', 'migrate', 'begin', '-'], '<domain>');
    expect(bad).toMatchObject({ exitCode: 0, stdout: '' });
    expect(bad.messages.join('\n')).toMatch(/not noted as incoming/);
    const h = fakeHost({ failNote: new Error('disk full') });
    const r = await runHook(h, ['vm1', 'migrate', 'begin', '-'], XML);
    expect(r).toMatchObject({ exitCode: 0, stdout: '' });
    expect(r.messages.join('\n')).toMatch(/disk full/);
  });

  it('reconnect begin does not seed as a start', async () => {
    const h = fakeHost();
    await runHook(h, ['vm1', 'reconnect', 'begin', '-'], XML);
    expect(h.calls[1]?.args[4]).toBe(false);
  });

  it.each([
    ['prepare', 'begin'],
    ['started', 'begin'],
    ['release', 'begin'],
  ])('%s %s: prints nothing, exits 0, takes no lock', async (op, subop) => {
    const h = fakeHost();
    const r = await runHook(h, ['vm1', op, subop, '-'], XML);
    expect(r).toMatchObject({ exitCode: 0, stdout: '', messages: [] });
    expect(h.calls).toEqual([]);
  });

  it('names a mismatch between the hook argument and the XML', async () => {
    const r = await runHook(fakeHost(), ['other', 'start', 'begin', '-'], XML);
    expect(r.exitCode).toBe(0);
    expect(r.messages).toEqual(["note: the hook is for domain 'other', its XML names 'vm1'"]);
  });
});
