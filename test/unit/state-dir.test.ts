// The state directory without a kernel (issue 9 faults 4, 6, 9, 11): atomic
// writes that leave no temp file, a damaged state.json refused with a way
// out and rebuilt from the audit log, stored generations verified by hash
// and replaced from their source, pruning that keeps the current and the
// rollback target, stale temp files of dead processes removed, the space
// check, the journal and the audit log, and the refusal of an empty
// generation.
import { execa } from 'execa';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { compileGeneration } from '../../src/compile.js';
import { appendAudit, interfaceChanges, readAudit, stateFromAudit } from '../../src/host/audit.js';
import { startChange } from '../../src/host/change.js';
import { readGeneration, rollbackTarget, StateDir, writeAtomic, writeGeneration } from '../../src/host/generation.js';
import { describeJournal, processStart, readJournal, writeJournal } from '../../src/host/journal.js';
import { checkNotEmptying } from '../../src/host/preflight.js';
import { RecordingRunner } from '../../src/host/runner.js';
import { loadSources } from '../../src/resolve/sources.js';
import { CODES, exitCodeFor, NwfError } from '../../src/util/errors.js';
import { nwfErrorOf } from '../support/cli.js';
import { bindingXml } from '../support/policy.js';

// every directory of this file under one, removed at the end
const root = mkdtempSync(join(tmpdir(), 'nwf-state-unit-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
function temp(files: Record<string, string> = {}): string {
  const d = mkdtempSync(join(root, 'd-'));
  for (const [name, text] of Object.entries(files)) writeFileSync(join(d, name), text);
  return d;
}
const caught = nwfErrorOf;

const sourcesWith = (ips: string[], ifaces = ['vnet0']) => {
  const files = Object.fromEntries(ifaces.map((i, n) => [`${i}.xml`, bindingXml(i, `52:54:00:00:00:0${n + 1}`, 'clean-traffic', { IP: ips })]));
  return loadSources({ filterDirs: [], bundled: true, bindingPaths: [temp(files)], domainPaths: [], libvirt: false });
};

async function generation(ips: string[], ifaces = ['vnet0']): Promise<string> {
  const dir = join(temp(), 'gen');
  await writeGeneration(dir, compileGeneration(sourcesWith(ips, ifaces), 'nft'));
  return dir;
}

/** A process that has ended: its pid. */
async function deadPid(): Promise<number> {
  const p = await execa('sh', ['-c', 'echo $$']);
  return Number(p.stdout.trim());
}

describe('atomic writes', () => {
  it('a write that fails says what and why, and leaves no temp file', () => {
    const d = temp();
    writeFileSync(join(d, 'file'), 'x');
    // the parent is a file: ENOTDIR
    const e = caught(() => writeAtomic(join(d, 'file', 'state.json'), '{}'));
    expect(e.code).toBe(CODES.STATE_UNWRITABLE);
    expect(exitCodeFor(e)).toBe(1);
    expect(e.message).toContain(join(d, 'file', 'state.json'));
    expect(readdirSync(d)).toEqual(['file']);
  });

  it('the space check refuses before anything is written', () => {
    const s = new StateDir(join(temp(), 'state'));
    const e = caught(() => s.checkWritable(Number.MAX_SAFE_INTEGER));
    expect(e.code).toBe(CODES.STATE_UNWRITABLE);
    expect(e.message).toMatch(/has \d+ KiB free, and this change writes about/);
    expect(readdirSync(s.dir)).toEqual(['generations']);
    s.checkWritable(1024);
  });

  it('stale temp files of dead processes go, those of live ones stay', async () => {
    const s = new StateDir(temp());
    const dead = await deadPid();
    mkdirSync(join(s.dir, 'generations', `.tmp-0123456789abcdef.tmp-${dead}`), { recursive: true });
    writeFileSync(join(s.dir, `state.json.tmp-${dead}`), '{');
    writeFileSync(join(s.dir, `state.json.tmp-${process.pid}`), '{');
    const removed = s.cleanStale();
    expect(removed.map((f) => f.slice(s.dir.length + 1)).sort()).toEqual([`generations/.tmp-0123456789abcdef.tmp-${dead}`, `state.json.tmp-${dead}`]);
    expect(existsSync(join(s.dir, `state.json.tmp-${process.pid}`))).toBe(true);
  });
});

describe('a damaged state file (fault 9)', () => {
  it('is refused with what is wrong and how to recover (not an unexplained failure)', () => {
    const s = new StateDir(temp({ 'state.json': '{"current": "0123' }));
    const e = caught(() => s.read());
    expect(e.code).toBe(CODES.STATE_INVALID);
    expect(e.message).toMatch(/state file .*state\.json is damaged/);
    expect(e.details.hint).toMatch(/nwf-fast load DIR/);
    expect(e.details.hint).toMatch(/unload --force/);
  });

  it('is rebuilt from the audit log for a command that repairs it, and kept aside', async () => {
    const s = new StateDir(temp());
    const g1 = readGeneration(await generation(['10.0.0.2']));
    const g2 = readGeneration(await generation(['10.0.0.3']));
    s.store(g1);
    s.store(g2);
    appendAudit(s.dir, { op: 'load', outcome: 'ok', generation: g1.manifest.id, previous: null, durationMs: 1 });
    appendAudit(s.dir, { op: 'load', outcome: 'refused', generation: 'ffffffffffffffff', previous: g1.manifest.id, durationMs: 1 });
    appendAudit(s.dir, { op: 'load', outcome: 'ok', generation: g2.manifest.id, previous: g1.manifest.id, durationMs: 1 });
    // a line cut short by a crash
    writeFileSync(join(s.dir, 'audit.log'), readFileSync(join(s.dir, 'audit.log'), 'utf8') + '{"version":1,"op":"lo');
    writeFileSync(s.stateFile, '');
    const r = s.readForRepair(() => stateFromAudit(s.dir));
    expect(r.damaged).toBe('empty');
    expect(r.state).toEqual({ current: g2.manifest.id, history: [g1.manifest.id, g2.manifest.id] });
    expect(existsSync(`${s.stateFile}.damaged`)).toBe(true);
    expect(readAudit(s.dir).damagedLines).toBe(1);
  });
});

describe('stored generations', () => {
  it('a damaged stored copy is found by hash and replaced from the source (fault 9)', async () => {
    const s = new StateDir(temp());
    const g = readGeneration(await generation(['10.0.0.2']));
    const stored = s.store(g);
    writeFileSync(join(stored.dir, 'policy.json'), '{"trunc');
    expect(caught(() => s.load(g.manifest.id)).message).toMatch(/does not match its manifest|damaged/);
    const notes: string[] = [];
    const again = s.store(g, notes);
    expect(again.manifest.id).toBe(g.manifest.id);
    expect(notes[0]).toMatch(/stored copy of generation .* was damaged .*replaced from/);
    expect(s.load(g.manifest.id).parts).toEqual(g.parts);
    expect(readdirSync(join(s.dir, 'generations'))).toEqual([g.manifest.id]);
  });

  it('a truncated manifest and an edited eBPF object are refused by name', async () => {
    const g = compileGeneration(sourcesWith(['10.0.0.2']), 'bpf');
    const runner = new RecordingRunner((argv) => {
      if (argv[1] === '--version') return { stdout: 'clang version 19.0.0 (fake)\n' };
      writeFileSync(argv[argv.indexOf('-o') + 1] as string, 'an object');
      return {};
    });
    const dir = join(temp(), 'gen');
    const m = await writeGeneration(dir, g, { cacheDir: temp(), runner });
    expect(m.objects).toHaveLength(1);
    expect(readGeneration(dir).bpf).toBeDefined();
    const obj = join(dir, m.objects![0]!.file);
    writeFileSync(obj, 'another object');
    expect(caught(() => readGeneration(dir)).message).toMatch(/eBPF object bpf\/.* does not match its manifest/);
    writeFileSync(join(dir, 'manifest.json'), '{"format": "nwf');
    expect(caught(() => readGeneration(dir)).message).toMatch(/manifest\.json is unreadable/);
  });

  it('pruning keeps the last N, the current one and the rollback target (fault 11)', async () => {
    const s = new StateDir(temp());
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) ids.push(s.store(readGeneration(await generation([`10.0.0.${i + 2}`]))).manifest.id);
    // history: 0 1 2 3 4 5, then 1 again as current (a rollback target is 5)
    const state = { current: ids[1]!, history: [...ids, ids[1]!] };
    expect(rollbackTarget(state)).toBe(ids[5]);
    const gone = s.prune(state, 1);
    expect(gone.sort()).toEqual([ids[0], ids[2], ids[3], ids[4]].sort());
    expect(s.storedIds().sort()).toEqual([ids[1], ids[5]].sort());
    // a rollback after pruning still finds its generation
    expect(s.load(rollbackTarget(state)!).manifest.id).toBe(ids[5]);
  });
});

describe('the kernel snapshot as status finds it (fault 8)', () => {
  it('missing, damaged and ok are told apart', async () => {
    const s = new StateDir(temp());
    const g = s.store(readGeneration(await generation(['10.0.0.2'])));
    expect(s.kernelSnapshot(g.manifest.id)).toMatchObject({ kind: 'missing' });
    writeFileSync(join(g.dir, 'kernel.json'), '{"bridge": [');
    expect(s.kernelSnapshot(g.manifest.id)).toMatchObject({ kind: 'damaged' });
    s.writeKernelSnapshot(g.manifest.id, { bridge: [] });
    expect(s.kernelSnapshot(g.manifest.id)).toEqual({ kind: 'ok', doc: { bridge: [] } });
  });
});

describe('the journal and the audit log (fault 6)', () => {
  it('a change refused, failed, failed after apply and done: one audit line each, the journal only where the kernel changed', async () => {
    const s = new StateDir(temp());
    const outcome = () => readAudit(s.dir).records.at(-1);
    let c = startChange(s, 'load');
    c.describe('aaaaaaaaaaaaaaaa', null);
    const refused = new NwfError(CODES.LOAD_REFUSED, 'no');
    expect(c.fail(refused)).toBe(refused);
    expect(outcome()).toMatchObject({ op: 'load', outcome: 'refused', generation: 'aaaaaaaaaaaaaaaa', error: { code: 'NWF1409' } });
    expect(readJournal(s).kind).toBe('none');

    c = startChange(s, 'load');
    c.journal('aaaaaaaaaaaaaaaa', 'bbbbbbbbbbbbbbbb');
    expect(readJournal(s)).toMatchObject({ kind: 'entry', running: true, entry: { op: 'load', generation: 'aaaaaaaaaaaaaaaa', previous: 'bbbbbbbbbbbbbbbb', phase: 'applying' } });
    c.fail(new NwfError(CODES.LOAD_FAILED, 'nft said no'));
    expect(outcome()).toMatchObject({ outcome: 'failed', error: { code: 'NWF1404' } });
    expect(readJournal(s).kind).toBe('none');

    c = startChange(s, 'rollback');
    c.journal('aaaaaaaaaaaaaaaa', 'bbbbbbbbbbbbbbbb');
    c.touched('generation aaaaaaaaaaaaaaaa');
    const e = c.fail(new Error('disk on fire')) as NwfError;
    expect(e.code).toBe(CODES.FAILED_AFTER_APPLY);
    expect(exitCodeFor(e)).toBe(1);
    expect(e.message).toMatch(/rollback of aaaaaaaaaaaaaaaa failed after the kernel had changed: disk on fire\. In force now: generation aaaaaaaaaaaaaaaa/);
    const j = readJournal(s);
    expect(j).toMatchObject({ kind: 'entry', running: false, entry: { phase: 'failed-after-apply', inForce: 'generation aaaaaaaaaaaaaaaa' } });
    expect(describeJournal(j)).toMatch(/failed after the kernel had changed/);
    expect(outcome()).toMatchObject({ op: 'rollback', outcome: 'failed-after-apply' });

    c = startChange(s, 'load');
    c.journal('aaaaaaaaaaaaaaaa', null, { interfaces: { added: ['vnet0'], removed: [], changed: [] } });
    c.touched('x');
    c.done({ incremental: true });
    expect(readJournal(s).kind).toBe('none');
    expect(outcome()).toMatchObject({ version: 1, op: 'load', outcome: 'ok', incremental: true, interfaces: { added: ['vnet0'] }, pid: process.pid });
    expect(typeof outcome()?.durationMs).toBe('number');
  });

  it('a journal whose process is gone is an interrupted change; a reused pid is not taken for its writer', async () => {
    const s = new StateDir(temp());
    const dead = await deadPid();
    writeJournal(s, { version: 1, op: 'load', generation: 'a', previous: 'b', pid: dead, startedAt: 'then', phase: 'applying' });
    const j = readJournal(s);
    expect(j).toMatchObject({ kind: 'entry', running: false });
    expect(describeJournal(j)).toMatch(/a load of a over b was interrupted/);
    // this process's pid with another start time: not this process's journal
    writeJournal(s, { version: 1, op: 'load', generation: 'a', previous: 'b', pid: process.pid, pidStart: `${processStart(process.pid)}0`, startedAt: 'then', phase: 'applying' });
    expect(readJournal(s)).toMatchObject({ running: false });
    writeFileSync(join(s.dir, 'journal.json'), '{"op"');
    expect(describeJournal(readJournal(s))).toMatch(/journal is damaged/);
  });

  it('interfaceChanges names added, removed and changed interfaces', () => {
    const a = compileGeneration(sourcesWith(['10.0.0.2'], ['vnet0', 'vnet1']), 'nft').ir;
    const b = compileGeneration(sourcesWith(['10.0.0.3'], ['vnet1', 'vnet2']), 'nft').ir;
    expect(interfaceChanges(a, b)).toEqual({ added: ['vnet2'], removed: ['vnet0'], changed: ['vnet1'] });
    expect(interfaceChanges(a, a)).toEqual({ added: [], removed: [], changed: [] });
  });
});

describe('an empty generation (fault 4)', () => {
  it('is refused over one that protects interfaces (exit 2), unless allowed', async () => {
    const full = readGeneration(await generation(['10.0.0.2'], ['vnet0', 'vnet1']));
    const dir = join(temp(), 'empty');
    await writeGeneration(dir, compileGeneration(loadSources({ filterDirs: [], bundled: true, bindingPaths: [], domainPaths: [], libvirt: false }), 'nft'));
    const empty = readGeneration(dir);
    const e = caught(() => checkNotEmptying(empty, full, false));
    expect(e.code).toBe(CODES.LOAD_REFUSED);
    expect(exitCodeFor(e)).toBe(2);
    expect(e.message).toMatch(/protects no interface, and the loaded generation \w+ protects 2 \(vnet0, vnet1\)/);
    expect(e.details.hint).toMatch(/--allow-empty/);
    checkNotEmptying(empty, full, true);
    checkNotEmptying(empty, undefined, false);
    checkNotEmptying(empty, empty, false);
    checkNotEmptying(full, full, false);
  });
});
