// Trustworthy state on a real (namespaced) host, through the CLI (issue 9
// faults 4, 6, 8, 9, 10, 11 and the operator outputs). Every test starts
// from a clean kernel in its namespace and a fresh state directory; each
// asserts what failed on main before the fix.
import { execa, type Options } from 'execa';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { compileGeneration, type Backend } from '../../src/compile.js';
import { loadGeneration } from '../../src/host/apply.js';
import { TC_HANDLE, TC_PRIORITY } from '../../src/host/bpf-apply.js';
import { tcQuery } from '../../src/host/bpf/tc.js';
import { writeGeneration } from '../../src/host/generation.js';
import { normalizeListing } from '../../src/host/inventory.js';
import { ifIndex, withNetns } from '../../src/host/netns.js';
import { nftListRuleset } from '../../src/host/nft.js';
import type { Testbed } from '../../src/lab/testbed.js';
import { loadSources } from '../../src/resolve/sources.js';
import { bindingXml } from '../support/policy.js';
import { createDemoHost, isRoot, ROOT_REASON, VM_MAC } from './support/differential.js';

const CLI = join(import.meta.dirname, '..', '..', 'bin', 'nwf-fast.js');

describe.skipIf(!isRoot)('state, status and recovery on a namespaced host', () => {
  let tb: Testbed;
  let work: string;
  let state: string;
  let n = 0;
  const gens: Record<string, string> = {};
  const pinDir = `/sys/fs/bpf/nwf-fast-test-state-${process.pid}`;

  const node = (args: string[], stateDir = state) => [process.execPath, CLI, ...args, '--state-dir', stateDir];
  // a configuration that manages no bridge: the live host's view of VM ports (its own tests) stays out of these
  let env: Record<string, string>;
  /** The CLI in the host namespace (`ip netns exec`: a private mount namespace, eBPF pins vanish with it). */
  const cli = (args: string[], o: { env?: Record<string, string>; stateDir?: string } = {}) =>
    execa('ip', ['netns', 'exec', tb.hostNs, ...node(args, o.stateDir)], { reject: false, timeout: 60_000, env: { ...env, ...o.env } } satisfies Options);
  /** The CLI in the host's network namespace only (pins shared with this process). */
  const cliNet = (args: string[], stateDir = state) => execa('nsenter', [`--net=/run/netns/${tb.hostNs}`, ...node([...args, '--pin-dir', pinDir], stateDir)], { reject: false, timeout: 60_000, env });
  /** A shell script in a private mount namespace (read-only or full state directories). */
  const inMountNs = (script: string) => execa('unshare', ['-m', '--propagation', 'private', 'sh', '-ec', script], { reject: false, timeout: 60_000, env });
  const nft = (args: string[]) => execa('ip', ['netns', 'exec', tb.hostNs, 'nft', ...args], { reject: false });
  /** Every table named nwf_fast, normalized (handles and counters aside). */
  const tables = async () => {
    const all = await nftListRuleset({ netns: tb.hostNs });
    return normalizeListing({ nftables: all.nftables.filter((o) => JSON.stringify(o).includes('"nwf_fast"')) });
  };
  const attached = () =>
    withNetns(tb.hostNs, () => {
      const ifindex = ifIndex('vnet0');
      return (['ingress', 'egress'] as const).map((direction) => tcQuery({ ifindex, direction, handle: TC_HANDLE, priority: TC_PRIORITY })?.progId);
    });
  const tmpFiles = (dir: string): string[] => (existsSync(dir) ? readdirSync(dir, { recursive: true }).map(String).filter((f) => /\.tmp-\d+$/.test(f)) : []);
  const idOf = (gen: string): string => JSON.parse(readFileSync(join(gen, 'manifest.json'), 'utf8')).id;
  /** The audit log's lines (read here, not with src/host/audit.ts, so the test runs against older versions too). */
  const readAudit = (dir = state): { records: Record<string, unknown>[] } => ({
    records: existsSync(join(dir, 'audit.log')) ? readFileSync(join(dir, 'audit.log'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>) : [],
  });
  const lastAudit = (dir = state) => readAudit(dir).records.at(-1);

  async function generation(name: string, ips: string[] | null, backend: Backend = 'nft'): Promise<string> {
    const dir = join(work, name);
    const b = mkdtempSync(join(tmpdir(), 'nwf-sb-'));
    if (ips) writeFileSync(join(b, 'vnet0.xml'), bindingXml('vnet0', VM_MAC, 'clean-traffic', { IP: ips }));
    const src = loadSources({ filterDirs: [], bundled: true, bindingPaths: [b], domainPaths: [], libvirt: false });
    await writeGeneration(dir, compileGeneration(src, backend));
    rmSync(b, { recursive: true });
    return dir;
  }

  beforeAll(async () => {
    tb = await createDemoHost('nwfs');
    work = mkdtempSync(join(tmpdir(), 'nwf-state-'));
    chmodSync(work, 0o755);
    writeFileSync(join(work, 'nwf-fast.conf'), 'bridges = nwf-none\n');
    env = { NWF_FAST_CONFIG: join(work, 'nwf-fast.conf') };
    gens.g1 = await generation('g1', ['10.77.0.2']);
    gens.g2 = await generation('g2', ['10.77.0.2', '10.77.0.3']);
    gens.empty = await generation('empty', null);
    gens.both = await generation('both', ['10.77.0.3'], 'both');
  });
  afterAll(async () => {
    await tb?.destroy();
    if (work) rmSync(work, { recursive: true, force: true });
    rmSync(pinDir, { recursive: true, force: true });
  });
  beforeEach(async () => {
    // a clean kernel (everything of nwf-fast's, and the foreign tables a test made) and a fresh state directory
    await cliNet(['unload', '--force'], join(work, 'scratch'));
    for (const f of ['bridge', 'inet', 'ip', 'ip6']) await nft(['delete', 'table', f, 'nwf_fast']);
    state = join(work, `state${n++}`);
  });

  describe('fault 4: an empty generation', () => {
    it('is refused (exit 2) when the loaded one protects ports; --allow-empty loads it', async () => {
      expect((await cli(['load', gens.g1!])).exitCode).toBe(0);
      const before = await tables();
      const r = await cli(['load', gens.empty!]);
      expect(r.exitCode).toBe(2);
      expect(r.stderr).toContain('error NWF1409');
      expect(r.stderr).toMatch(/protects no interface, and the loaded generation \w+ protects 1 \(vnet0\)/);
      expect(await tables()).toEqual(before);
      expect(lastAudit()).toMatchObject({ op: 'load', outcome: 'refused', generation: idOf(gens.empty!), error: { code: 'NWF1409' } });
      const ok = await cli(['load', gens.empty!, '--allow-empty']);
      expect(ok.exitCode).toBe(0);
    });
  });

  describe('fault 6: nothing changes in the kernel when a check fails; a failure after apply says so', () => {
    it('a read-only state directory: load and unload refuse before touching the kernel, no temp file left', async () => {
      expect((await cli(['load', gens.g1!])).exitCode).toBe(0);
      const before = await tables();
      const stateBefore = readFileSync(join(state, 'state.json'), 'utf8');
      const ro = (args: string) =>
        inMountNs(`mount --bind ${state} ${state}; mount -o remount,bind,ro ${state}; exec ip netns exec ${tb.hostNs} ${process.execPath} ${CLI} ${args} --state-dir ${state}`);
      // g2 differs from g1 only in an address: main applied it incrementally, then failed (exit 70)
      let r = await ro(`load ${gens.g2}`);
      expect(r.exitCode).toBe(1);
      expect(r.stderr).toMatch(/error NWF1411: cannot write .*: the file system is read-only/);
      expect(r.stderr).not.toMatch(/\n\s+at /);
      expect(await tables()).toEqual(before);
      r = await ro('unload');
      expect(r.exitCode).toBe(1);
      expect(r.stderr).toContain('error NWF1411');
      expect(await tables()).toEqual(before);
      expect(readFileSync(join(state, 'state.json'), 'utf8')).toBe(stateBefore);
      expect(tmpFiles(state)).toEqual([]);
    });

    it('a full disk: load refuses before touching the kernel, no temp file left', async () => {
      // what g1 looks like in the kernel, loaded with another state directory
      expect((await cli(['load', gens.g1!], { stateDir: join(work, `ref${n}`) })).exitCode).toBe(0);
      const before = await tables();
      await cliNet(['unload', '--force'], join(work, 'scratch'));
      // the state directory on a small tmpfs (in a private mount namespace), filled after the first load
      mkdirSync(state, { recursive: true });
      const run = `ip netns exec ${tb.hostNs} ${process.execPath} ${CLI}`;
      const r = await inMountNs(
        `mount -t tmpfs -o size=512k tmpfs ${state}
         ${run} load ${gens.g1} --state-dir ${state}
         free=$(( $(stat -f -c '%a*%S' ${state}) ))
         dd if=/dev/zero of=${state}/filler bs=1024 count=$(( free / 1024 - 8 )) 2>/dev/null || true
         ${run} load ${gens.g2} --state-dir ${state} --full || echo "exit=$?"
         find ${state} -name '*.tmp-*'
         cat ${state}/state.json`,
      );
      expect(r.stdout).toContain('exit=1');
      expect(r.stderr).toMatch(/error NWF1411: the state directory .* has \d+ KiB free, and this change writes about \d+ KiB/);
      expect(r.stdout).not.toMatch(/\.tmp-\d+/);
      expect(JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))).current).toBe(idOf(gens.g1!));
      expect(await tables()).toEqual(before);
    });

    it('a pin directory not on bpffs is found before the nft rules change', async () => {
      expect((await cli(['load', gens.g1!])).exitCode).toBe(0);
      const before = await tables();
      const r = await cli(['load', gens.both!, '--pin-dir', join(work, 'not-bpffs')]);
      expect(r.exitCode).toBe(1);
      expect(r.stderr).toMatch(/is not on a bpf filesystem/);
      expect(await tables()).toEqual(before);
    });

    it('a failure after the kernel changed: exit 1 saying what is in force, status reports it, the next load repairs it', async () => {
      expect((await cli(['load', gens.g1!])).exitCode).toBe(0);
      const r = await cli(['load', gens.g2!, '--full'], { env: { NWF_FAST_FAULT: 'fail-after-apply' } });
      expect(r.exitCode).toBe(1);
      expect(r.stderr).toContain('error NWF1412');
      expect(r.stderr).toContain(`In force now: generation ${idOf(gens.g2!)}`);
      expect(r.stderr).not.toMatch(/\n\s+at /);
      expect(lastAudit()).toMatchObject({ op: 'load', outcome: 'failed-after-apply', generation: idOf(gens.g2!), previous: idOf(gens.g1!) });
      let s = await cli(['status']);
      expect(s.exitCode).toBe(3);
      expect(s.stdout).toContain('health: FAILED AFTER APPLY');
      expect(s.stdout).toMatch(/failed after the kernel had changed/);
      s = await cli(['status', '--json']);
      expect(JSON.parse(s.stdout)).toMatchObject({ version: 1, kind: 'status', health: 'failed-after-apply', exitCode: 3 });
      const fix = await cli(['load', gens.g2!]);
      expect(fix.exitCode).toBe(0);
      expect(fix.stderr).toMatch(/repaired: a load of \w+ over \w+ failed after the kernel had changed/);
      expect((await cli(['status'])).exitCode).toBe(0);
    });

    it("a temp file of a process that died is removed by the next load", async () => {
      expect((await cli(['load', gens.g1!])).exitCode).toBe(0);
      const dead = Number((await execa('sh', ['-c', 'echo $$'])).stdout);
      writeFileSync(join(state, `state.json.tmp-${dead}`), '{"cur');
      const r = await cli(['load', gens.g2!]);
      expect(r.exitCode).toBe(0);
      expect(r.stderr).toContain(`removed ${join(state, `state.json.tmp-${dead}`)}, left by a process that died`);
      expect(tmpFiles(state)).toEqual([]);
    });
  });

  describe('fault 8: status tells what it cannot see', () => {
    it('as non-root: says it cannot read the kernel (exit 1), never "drift: no" or tables missing', async () => {
      expect((await cli(['load', gens.g1!])).exitCode).toBe(0);
      chmodSync(state, 0o755);
      const r = await execa('ip', ['netns', 'exec', tb.hostNs, 'setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', ...node(['status'])], { reject: false, env });
      expect(r.exitCode).toBe(1);
      expect(r.stdout).toContain('health: UNKNOWN (cannot read the kernel)');
      expect(r.stdout).toMatch(/cannot read the kernel's nftables tables: EPERM/);
      expect(r.stdout).toContain('drift: UNKNOWN');
      expect(r.stdout).not.toMatch(/drift: (no|YES)|missing/);
      const j = await execa('ip', ['netns', 'exec', tb.hostNs, 'setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', ...node(['status', '--json'])], { reject: false, env });
      expect(JSON.parse(j.stdout)).toMatchObject({ health: 'no-access', exitCode: 1, current: idOf(gens.g1!) });
    });

    it('a missing or truncated record of what is loaded: drift cannot be checked (exit 3), never healthy, never exit 70', async () => {
      expect((await cli(['load', gens.g1!])).exitCode).toBe(0);
      const head = join(state, 'loaded', 'head.json');
      const text = readFileSync(head, 'utf8');
      rmSync(head);
      let r = await cli(['status']);
      expect(r.exitCode).toBe(3);
      expect(r.stdout).toContain('health: NOT VERIFIED');
      expect(r.stdout).toContain('drift: UNKNOWN (not checked)');
      expect(r.stdout).toMatch(/drift cannot be checked: the record of what is loaded .* is missing/);
      writeFileSync(head, text.slice(0, 40));
      r = await cli(['status']);
      expect(r.exitCode).toBe(3);
      expect(r.stdout).toMatch(/record of what is loaded is damaged/);
      expect((await cli(['load', gens.g1!])).exitCode).toBe(0);
      expect((await cli(['status'])).exitCode).toBe(0);
    });

    it('nothing loaded has its own exit code (4), never loaded and after unload', async () => {
      let r = await cli(['status']);
      expect(r.exitCode).toBe(4);
      expect(r.stdout).toContain('health: nothing loaded');
      expect((await cli(['load', gens.g1!])).exitCode).toBe(0);
      expect((await cli(['status'])).exitCode).toBe(0);
      expect((await cli(['unload'])).exitCode).toBe(0);
      r = await cli(['status', '--json']);
      expect(r.exitCode).toBe(4);
      expect(JSON.parse(r.stdout)).toMatchObject({ health: 'not-loaded', current: null, drift: false });
    });

    it('status into a reader that went away: no EPIPE crash, the exit code of the status', async () => {
      expect((await cli(['load', gens.g1!])).exitCode).toBe(0);
      const r = await execa('bash', ['-c', `ip netns exec ${tb.hostNs} ${node(['status']).join(' ')} | true; echo "status=\${PIPESTATUS[0]}"`], { reject: false, env });
      expect(r.stdout).toContain('status=0');
      expect(r.stderr).not.toMatch(/EPIPE|Error/);
      const h = await execa('bash', ['-c', `ip netns exec ${tb.hostNs} ${node(['status']).join(' ')} | head -2; echo "status=\${PIPESTATUS[0]}"`], { reject: false, env });
      expect(h.stdout.split('\n').slice(0, 2)).toEqual(['health: healthy', expect.stringMatching(/^generation: \w+ \(nft\)/)]);
      expect(h.stdout).toContain('status=0');
    });
  });

  describe('fault 9: recovery', () => {
    it('a truncated state.json: status says what is wrong and how to recover; load repairs it', async () => {
      expect((await cli(['load', gens.g1!])).exitCode).toBe(0);
      expect((await cli(['load', gens.g2!])).exitCode).toBe(0);
      writeFileSync(join(state, 'state.json'), '{"current": "ab');
      let r = await cli(['status']);
      expect(r.exitCode).toBe(1);
      expect(r.stdout).toMatch(/state file .* is damaged/);
      expect(r.stdout).toMatch(/nwf-fast load DIR.*rebuilds it from the audit log/);
      r = await cli(['load', gens.g2!]);
      expect(r.exitCode).toBe(0);
      expect(r.stderr).toMatch(/repaired: state\.json was damaged .*rebuilt from the audit log/);
      r = await cli(['status', '--json']);
      expect(r.exitCode).toBe(0);
      expect(JSON.parse(r.stdout)).toMatchObject({ current: idOf(gens.g2!), history: [idOf(gens.g1!), idOf(gens.g2!), idOf(gens.g2!)] });
      // the rebuilt history still rolls back
      expect((await cli(['rollback'])).exitCode).toBe(0);
    });

    it('unload --force works from the kernel alone: marked tables, tc filters and pins go; foreign tables stay', async () => {
      expect((await cliNet(['load', gens.both!])).exitCode).toBe(0);
      expect(attached().every((id) => typeof id === 'number')).toBe(true);
      expect(readdirSync(pinDir).length).toBeGreaterThan(0);
      await nft(['add', 'table', 'inet', 'nwf_fast', '{ comment "ssh rules"; }']);
      rmSync(state, { recursive: true });
      writeFileSync(join(work, 'garbage'), 'x');
      const r = await cliNet(['unload', '--force'], join(work, 'garbage'));
      expect(r.exitCode, r.stderr).toBe(0);
      expect(r.stdout).toContain('unloaded (forced, from the kernel alone): removed table bridge nwf_fast');
      expect(attached()).toEqual([undefined, undefined]);
      expect(readdirSync(pinDir)).toEqual([]);
      expect((await nft(['list', 'tables'])).stdout.trim()).toBe('table inet nwf_fast');
    });

    it('a corrupt stored generation is replaced from its source; without a source it is refused clearly', async () => {
      expect((await cli(['load', gens.g1!])).exitCode).toBe(0);
      const stored = join(state, 'generations', idOf(gens.g1!));
      writeFileSync(join(stored, 'policy.json'), '{"version": 1, "interf');
      let r = await cli(['load', gens.g1!]);
      expect(r.exitCode).toBe(0);
      expect(r.stderr).toMatch(/the stored copy of generation \w+ was damaged .*replaced from/);
      expect((await cli(['status'])).exitCode).toBe(0);
      expect((await cli(['load', gens.g2!])).exitCode).toBe(0);
      writeFileSync(join(stored, 'nft-parts.json'), '');
      r = await cli(['rollback']);
      expect(r.exitCode).toBe(1);
      expect(r.stderr).toMatch(/cannot roll back to generation \w+: its stored copy is unusable/);
      expect(r.stderr).toMatch(/hint: there is no other copy to restore it from/);
      expect(lastAudit()).toMatchObject({ op: 'rollback', outcome: 'refused' });
    });
  });

  describe('fault 10: tables named like ours that are not ours', () => {
    it('a foreign inet nwf_fast table survives load, unload and unload --force, and is named', async () => {
      await nft(['add', 'table', 'inet', 'nwf_fast']);
      await nft(['add', 'chain', 'inet', 'nwf_fast', 'input', '{ type filter hook input priority 0; policy accept; }']);
      await nft(['add', 'rule', 'inet', 'nwf_fast', 'input', 'tcp', 'dport', '22', 'accept']);
      const foreign = async () => normalizeListing(JSON.parse((await nft(['-j', 'list', 'table', 'inet', 'nwf_fast'])).stdout));
      const before = await foreign();
      let r = await cli(['load', gens.g1!]);
      expect(r.exitCode).toBe(0);
      expect(r.stderr).toContain("note: table inet nwf_fast is not nwf-fast's (it has no nwf-fast owner mark): left alone");
      expect(await foreign()).toEqual(before);
      expect((await cli(['load', gens.g2!, '--full'])).exitCode).toBe(0);
      expect(await foreign()).toEqual(before);
      r = await cli(['status']);
      expect(r.exitCode).toBe(0);
      expect(r.stdout).toMatch(/note: table inet nwf_fast is not this state directory's/);
      expect((await cli(['unload'])).exitCode).toBe(0);
      expect(await foreign()).toEqual(before);
      expect((await cli(['unload', '--force'])).exitCode).toBe(0);
      expect(await foreign()).toEqual(before);
    });

    it('a foreign bridge nwf_fast table: load refuses to touch it, naming it and what to do', async () => {
      await nft(['add', 'table', 'bridge', 'nwf_fast']);
      await nft(['add', 'chain', 'bridge', 'nwf_fast', 'mine', '{ type filter hook forward priority 0; }']);
      const before = await tables();
      const r = await cli(['load', gens.g1!]);
      expect(r.exitCode).toBe(1);
      expect(r.stderr).toMatch(/error NWF1410: table bridge nwf_fast is not nwf-fast's .*refusing to touch it/);
      expect(r.stderr).toMatch(/hint: nwf-fast never changes a table it did not create/);
      expect(await tables()).toEqual(before);
    });

    it("another state directory's tables are refused, naming its owner id", async () => {
      const other = join(work, `other${n}`);
      expect((await cli(['load', gens.g1!], { stateDir: other })).exitCode).toBe(0);
      const owner = readFileSync(join(other, 'owner'), 'utf8').trim();
      const r = await cli(['load', gens.g2!]);
      expect(r.exitCode).toBe(1);
      expect(r.stderr).toContain(`table bridge nwf_fast belongs to another nwf-fast state directory (owner ${owner}`);
      expect(r.stderr).toContain(`printf '${owner}\\n' > ${state}/owner`);
      // adopting them as the hint says works
      writeFileSync(join(state, 'owner'), `${owner}\n`);
      expect((await cli(['load', gens.g2!])).exitCode).toBe(0);
    });
  });

  describe('fault 11: generations are pruned', () => {
    it('keeps the last N, never the current one or the rollback target', async () => {
      const ids: string[] = [];
      for (let i = 0; i < 6; i++) {
        const g = await generation(`p${i}`, [`10.77.1.${i + 1}`]);
        ids.push(idOf(g));
        await loadGeneration(g, { stateDir: state, netns: tb.hostNs, keepGenerations: 3 });
      }
      expect(readdirSync(join(state, 'generations')).sort()).toEqual(ids.slice(3).sort());
      // back to the first: the current one (just loaded again) and the rollback target are kept, whatever N
      await loadGeneration(join(work, 'p0'), { stateDir: state, netns: tb.hostNs, keepGenerations: 1 });
      expect(readdirSync(join(state, 'generations')).sort()).toEqual([ids[0], ids[5]].sort());
      expect((await cli(['rollback'])).exitCode).toBe(0);
    });
  });

  describe('operator outputs', () => {
    it('load, rollback, unload and status --json carry a version; metrics --out writes Prometheus text atomically; the audit log has a line each', async () => {
      let r = await cli(['load', gens.g1!, '--json']);
      expect(r.exitCode).toBe(0);
      expect(JSON.parse(r.stdout)).toMatchObject({ version: 1, kind: 'load', generation: idOf(gens.g1!), backend: 'nft', previous: null, interfaces: ['vnet0'], incremental: false });
      r = await cli(['load', gens.g2!, '--json']);
      expect(JSON.parse(r.stdout)).toMatchObject({ version: 1, kind: 'load', generation: idOf(gens.g2!), previous: idOf(gens.g1!), incremental: expect.any(Boolean) });
      r = await cli(['rollback', '--json']);
      expect(JSON.parse(r.stdout)).toMatchObject({ version: 1, kind: 'rollback', generation: idOf(gens.g1!), previous: idOf(gens.g2!) });
      r = await cli(['status', '--json']);
      expect(JSON.parse(r.stdout)).toMatchObject({ version: 1, kind: 'status', health: 'healthy', exitCode: 0, interfaces: [{ iface: 'vnet0', present: true }] });
      const prom = join(work, `metrics${n}.prom`);
      r = await cli(['metrics', '--out', prom]);
      expect(r.exitCode).toBe(0);
      const text = readFileSync(prom, 'utf8');
      expect(text).toContain('# TYPE nwf_fast_drops_total counter');
      expect(text).toContain('nwf_fast_drops_total{interface="vnet0",domain="vm",reason="ip-spoof",backend="nft"} 0');
      expect(text).toContain('nwf_fast_healthy 1');
      expect(text).toContain(`nwf_fast_generation_info{generation="${idOf(gens.g1!)}",backend="nft"} 1`);
      expect(readdirSync(work).filter((f) => f.startsWith(`metrics${n}.prom.tmp`))).toEqual([]);
      r = await cli(['unload', '--json']);
      expect(JSON.parse(r.stdout)).toMatchObject({ version: 1, kind: 'unload', previous: idOf(gens.g1!), tables: ['bridge nwf_fast'], forced: false });
      const audit = readAudit(state).records;
      expect(audit.map((a) => [a.op, a.outcome, a.generation])).toEqual([
        ['load', 'ok', idOf(gens.g1!)],
        ['load', 'ok', idOf(gens.g2!)],
        ['rollback', 'ok', idOf(gens.g1!)],
        ['unload', 'ok', null],
      ]);
      expect(audit[0]).toMatchObject({ version: 1, interfaces: { added: ['vnet0'], removed: [], changed: [] } });
      expect(audit[1]).toMatchObject({ interfaces: { added: [], removed: [], changed: ['vnet0'] }, incremental: expect.any(Boolean) });
      for (const a of audit) expect(a.durationMs as number).toBeGreaterThan(0);
      // an error with --json is JSON on stdout too
      r = await cli(['load', join(work, 'no-such-generation'), '--json']);
      expect(r.exitCode).toBe(1);
      expect(JSON.parse(r.stdout)).toMatchObject({ version: 1, kind: 'error', error: { code: 'NWF1403', category: 'runtime', exitCode: 1 } });
    });
  });
});

if (!isRoot) console.warn(`SKIP state: ${ROOT_REASON}`);
