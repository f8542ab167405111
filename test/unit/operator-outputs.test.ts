// What operators and their tools read: JSON outputs with a schema version
// and one naming of directions (fromVm / toVm), errors as JSON with --json,
// status exit codes, the Prometheus text of `metrics`, and the table mark
// read back from netlink bytes (no kernel needed for any of these).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { JSON_VERSION } from '../../src/cli/json.js';
import { toHex } from '../../src/frames/bytes.js';
import * as F from '../../src/lab/frames/build.js';
import { HEALTH_STATES, metricsText } from '../../src/host/metrics.js';
import { exitCodeOfHealth, type Status } from '../../src/host/status.js';
import { checkTableOwnership, commentOfUserdata, ownerOfComment, ownerMark, userdataOfTable, type TableProbe } from '../../src/host/table-owner.js';
import { CODES, EXIT, NwfError } from '../../src/util/errors.js';
import { run } from '../support/cli.js';
import { bindingXml, tempDir } from '../support/policy.js';


const bdir = tempDir({ 'vnet0.xml': bindingXml('vnet0', '52:54:00:00:00:01', 'clean-traffic', { IP: '10.0.0.2' }) });

describe('JSON outputs: a version, and directions named fromVm / toVm', () => {
  it('compile --policy --json', async () => {
    const r = await run(['compile', '--binding', bdir, '--policy', '--json']);
    expect(r.code).toBe(0);
    const doc = JSON.parse(r.out);
    expect(doc).toMatchObject({ version: JSON_VERSION, kind: 'policy', irVersion: 1 });
    const i = doc.interfaces[0];
    expect(Object.keys(i.l2)).toEqual(['fromVm', 'toVm']);
    expect(Object.keys(i.l3)).toEqual(['fromVm', 'toVm', 'toHost']);
    expect(i.l2.fromVm.chains.map((c: { name: string }) => c.name)).toContain('mac');
    expect(r.out).not.toMatch(/"(out|in)":/);
  });

  it('explain --json names the direction fromVm or toVm, and takes those names as --direction', async () => {
    const frame = toHex(F.udpFrame({ srcMac: '52:54:00:00:00:01', dstMac: '52:54:00:00:00:02', srcIp: '10.0.0.66', dstIp: '10.0.0.3', sport: 1, dport: 2 }));
    const a = await run(['explain', '--binding', bdir, '--iface', 'vnet0', '--direction', 'out', '--frame', frame, '--json']);
    const b = await run(['explain', '--binding', bdir, '--iface', 'vnet0', '--direction', 'fromVm', '--frame', frame, '--json']);
    expect(JSON.parse(a.out)).toMatchObject({ version: JSON_VERSION, kind: 'explain', iface: 'vnet0', direction: 'fromVm', verdict: 'drop', reason: 'ip-spoof' });
    expect(b.out).toBe(a.out);
    const c = await run(['explain', '--binding', bdir, '--iface', 'vnet0', '--direction', 'toVm', '--frame', frame, '--json']);
    expect(JSON.parse(c.out).direction).toBe('toVm');
  });

  it('an error with --json: the same diagnostic on stderr, and JSON with version, code, category and exit code on stdout', async () => {
    const bad = await run(['explain', '--binding', bdir, '--iface', 'vnet9', '--direction', 'out', '--frame', 'ff', '--json']);
    expect(bad.code).toBe(2);
    expect(bad.err).toContain('error NWF1209');
    expect(JSON.parse(bad.out)).toMatchObject({ version: JSON_VERSION, kind: 'error', error: { code: 'NWF1209', category: 'input', exitCode: 2 } });
  });

  it('a policy the backend refuses exits 2, as bad input does (issue 9 fault 11)', async () => {
    const f = tempDir({ 'f.xml': "<filter name='f' chain='root'><rule action='drop' direction='out'><arp gratuitous='true'/></rule></filter>" });
    const b = tempDir({ 'vnet0.xml': bindingXml('vnet0', '52:54:00:00:00:01', 'f') });
    const r = await run(['compile', '--filters', f, '--binding', b]);
    expect(r.err).toContain('error NWF1402');
    expect(r.code).toBe(2);
  });
});

describe('status exit codes', () => {
  it('healthy 0, nothing loaded 4, not healthy 3, could not look 1', () => {
    expect(EXIT.notLoaded).toBe(4);
    const codes = Object.fromEntries(HEALTH_STATES.map((h) => [h, exitCodeOfHealth(h)]));
    expect(codes).toEqual({ healthy: 0, 'not-loaded': 4, drift: 3, unprotected: 3, unverified: 3, interrupted: 3, 'failed-after-apply': 3, 'no-access': 1, 'state-damaged': 1 });
  });

  it('the README lists every status exit code', () => {
    const readme = readFileSync(join(import.meta.dirname, '..', '..', 'README.md'), 'utf8');
    for (const h of HEALTH_STATES) expect(readme).toContain(`\`${h}\``);
  });
});

const STATUS: Status = {
  stateDir: '/var/lib/nwf-fast',
  health: 'drift',
  problems: ['drift: x'],
  notes: [],
  current: '0123456789abcdef',
  history: ['0123456789abcdef'],
  loadedAt: '2026-01-02T03:04:05.000Z',
  backend: 'both',
  interfaces: [
    { iface: 'vnet0', owner: 'web "1"', filter: 'clean-traffic', drops: { 'mac-spoof': 3, 'ip-spoof': 0 }, bpfDrops: { 'mac-spoof': 7 } },
    { iface: 'vnet1', owner: 'db\\2', filter: 'clean-traffic', drops: {} },
  ],
  drift: true,
  tablesPresent: { bridge: true, l3: false },
  tables: [],
  unprotected: ['vnet1'],
};

describe('metrics: Prometheus text format', () => {
  const text = metricsText(STATUS);
  const lines = text.trimEnd().split('\n');

  it('every metric has HELP and TYPE, counters end in _total, every sample line parses', () => {
    const families = new Map<string, string>();
    for (const l of lines.filter((x) => x.startsWith('# TYPE '))) {
      const [, , name, type] = l.split(' ');
      families.set(name as string, type as string);
    }
    for (const name of families.keys()) expect(text).toContain(`# HELP ${name} `);
    for (const [name, type] of families) expect(name.endsWith('_total')).toBe(type === 'counter');
    const sample = /^([a-z_]+)(\{([a-z_]+="(?:[^"\\]|\\.)*")(,[a-z_]+="(?:[^"\\]|\\.)*")*\})? (-?[0-9.e+]+|NaN)$/;
    for (const l of lines.filter((x) => !x.startsWith('#'))) {
      expect(l, l).toMatch(sample);
      expect(families.has((sample.exec(l) as RegExpExecArray)[1] as string), l).toBe(true);
    }
    expect(text.endsWith('\n')).toBe(true);
  });

  it('drops per interface, domain, reason and backend; unprotected ports, drift, health, last load, generation', () => {
    expect(lines).toContain('nwf_fast_drops_total{interface="vnet0",domain="web \\"1\\"",reason="mac-spoof",backend="nft"} 3');
    expect(lines).toContain('nwf_fast_drops_total{interface="vnet0",domain="web \\"1\\"",reason="mac-spoof",backend="bpf"} 7');
    expect(lines).toContain('nwf_fast_unprotected_ports 1');
    expect(lines).toContain('nwf_fast_drift 1');
    expect(lines).toContain('nwf_fast_healthy 0');
    expect(lines).toContain('nwf_fast_health{state="drift"} 1');
    expect(lines).toContain('nwf_fast_health{state="healthy"} 0');
    expect(lines).toContain(`nwf_fast_last_load_timestamp_seconds ${Date.parse('2026-01-02T03:04:05.000Z') / 1000}`);
    expect(lines).toContain('nwf_fast_generation_info{generation="0123456789abcdef",backend="both"} 1');
    expect(lines).toContain('nwf_fast_protected_interfaces 2');
  });

  it('nothing loaded: no generation, no load time, health not-loaded', () => {
    const t = metricsText({ ...STATUS, health: 'not-loaded', current: null, interfaces: [], drift: false, unprotected: [], loadedAt: undefined as unknown as string });
    expect(t).toContain('nwf_fast_health{state="not-loaded"} 1');
    expect(t).not.toMatch(/^nwf_fast_generation_info\{/m);
    expect(t).not.toMatch(/^nwf_fast_last_load_timestamp_seconds /m);
  });
});

describe('the owner mark of our tables', () => {
  it('reads the comment from a NEWTABLE message (nfgenmsg, attributes, libnftnl user data)', () => {
    const comment = ownerMark('0123456789abcdef');
    const ud = Buffer.concat([Buffer.from([0, comment.length + 1]), Buffer.from(comment + '\0')]);
    const attr = (type: number, payload: Buffer) => {
      const len = 4 + payload.length;
      const b = Buffer.alloc((len + 3) & ~3);
      b.writeUInt16LE(len, 0);
      b.writeUInt16LE(type, 2);
      payload.copy(b, 4);
      return b;
    };
    const body = Buffer.concat([Buffer.from([7, 0, 0, 0]), attr(1, Buffer.from('nwf_fast\0')), attr(2, Buffer.alloc(4)), attr(6, ud)]);
    const got = userdataOfTable(body);
    expect(got && commentOfUserdata(got)).toBe(comment);
    expect(ownerOfComment(comment)).toBe('0123456789abcdef');
    expect(ownerOfComment('ssh rules')).toBeUndefined();
    expect(ownerOfComment('nwf-fast owner=nope')).toBeUndefined();
    expect(userdataOfTable(Buffer.concat([Buffer.from([7, 0, 0, 0]), attr(1, Buffer.from('t\0'))]))).toBeUndefined();
  });

  it('a table the change needs that is not ours is refused by name; others are left alone with a note', () => {
    const tables: TableProbe[] = [
      { family: 'bridge', name: 'nwf_fast', state: 'ours', owner: 'a' },
      { family: 'ip', name: 'nwf_fast', state: 'other-owner', owner: 'b'.repeat(16) },
      { family: 'inet', name: 'nwf_fast', state: 'foreign', comment: 'ssh' },
    ];
    expect(checkTableOwnership(tables, 'a', new Set(['bridge']), '/s')).toEqual([
      expect.stringMatching(/table ip nwf_fast belongs to another nwf-fast state directory \(owner b+; this one is a\): left alone/),
      expect.stringMatching(/table inet nwf_fast is not nwf-fast's \(it has no nwf-fast owner mark; its comment is "ssh"\): left alone/),
    ]);
    let e: unknown;
    try {
      checkTableOwnership(tables, 'a', new Set(['bridge', 'inet']), '/s');
    } catch (x) {
      e = x;
    }
    expect(e).toBeInstanceOf(NwfError);
    expect((e as NwfError).code).toBe(CODES.TABLE_NOT_OURS);
    expect((e as NwfError).message).toMatch(/^table inet nwf_fast is not nwf-fast's .* refusing to touch it/);
    expect((e as NwfError).details.hint).toMatch(/nft delete table inet nwf_fast/);
    try {
      checkTableOwnership(tables, 'a', new Set(['ip']), '/s');
    } catch (x) {
      e = x;
    }
    expect((e as NwfError).details.hint).toContain(`printf '${'b'.repeat(16)}\\n' > /s/owner`);
  });
});
