// Kernel tests of the libbpf binding (src/host/bpf/): load real programs,
// drive maps, BPF_PROG_TEST_RUN, pin in bpffs, and attach through tc clsact,
// tcx and XDP links — every attachment inside a network namespace this file
// creates (never the root namespace's interfaces).
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execa } from 'execa';
import { ExecaRunner } from '../../src/host/runner.js';
import {
  attachTcx,
  attachXdp,
  BPF_EXIST,
  BPF_NOEXIST,
  BpfError,
  BpfLinkType,
  BpfMapType,
  BpfObject,
  BpfProgType,
  BPF_TCX_INGRESS,
  currentNetnsInode,
  ensureBpffs,
  ifIndex,
  isBpffs,
  kernelHasTcx,
  numPossibleCpus,
  openPinnedLink,
  openPinnedMap,
  openPinnedProgram,
  readU64,
  TC_ACT,
  tcAttach,
  tcDetach,
  tcHookCreate,
  tcHookDestroy,
  tcQuery,
  tcReplace,
  u32,
  withNetns,
  type BpfLink,
  type TcFilterSpec,
} from '../../src/host/bpf/libbpf.js';
import { CODES, NwfError } from '../../src/util/errors.js';
import { EEXIST } from '../../src/host/bpf/errors.js';
import { attachPorts } from '../../src/host/bpf/hook.js';
import { tcRequestError, tcRequestOk, tcRequests, type TcRequest } from '../../src/host/bpf/rtnl.js';

const FIXTURES = join(import.meta.dirname, '..', 'fixtures', 'bpf');
const CLANG = 'clang-19';

async function which(cmd: string): Promise<boolean> {
  const r = await execa(cmd, ['--version'], { reject: false, timeout: 10_000 });
  return r.exitCode === 0;
}

const skipReason: string | undefined =
  process.getuid?.() !== 0
    ? 'needs root (CAP_BPF and CAP_NET_ADMIN to load programs and create network namespaces)'
    : !(await which(CLANG))
      ? `${CLANG} is not installed (scripts/install-deps.sh installs it)`
      : !existsSync('/usr/include/bpf/bpf_helpers.h')
        ? 'libbpf-dev headers are not installed'
        : undefined;

const run = new ExecaRunner();
const CNT_SEEN = 0;
const CNT_DROPPED = 1;
const CNT_PASS_ALT = 2;

function frame(etherType: number, len = 60): Buffer {
  const f = Buffer.alloc(len);
  f.fill(0xff, 0, 6); // broadcast
  Buffer.from([0x02, 0, 0, 0, 0, 0x01]).copy(f, 6);
  f.writeUInt16BE(etherType, 12);
  return f;
}

/** An Ethernet frame carrying a minimal IPv4/UDP packet with a correct header checksum. */
function ipv4Frame(): Buffer {
  const f = frame(0x0800, 60);
  const ip = f.subarray(14, 34);
  ip[0] = 0x45;
  ip.writeUInt16BE(28, 2); // total length: 20 + 8
  ip[8] = 64; // ttl
  ip[9] = 17; // udp
  Buffer.from([10, 0, 0, 1]).copy(ip, 12);
  Buffer.from([10, 0, 0, 2]).copy(ip, 16);
  let sum = 0;
  for (let i = 0; i < 20; i += 2) sum += ip.readUInt16BE(i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  ip.writeUInt16BE(~sum & 0xffff, 10);
  f.writeUInt16BE(1234, 34);
  f.writeUInt16BE(5678, 36);
  f.writeUInt16BE(8, 38);
  return f;
}

async function compile(src: string, outDir: string): Promise<string> {
  const out = join(outDir, src.replace(/\.c$/, '.o'));
  await run.run(
    [CLANG, '-O2', '-g', '-target', 'bpf', '-Wall', '-Werror', '-I/usr/include/x86_64-linux-gnu', '-c', join(FIXTURES, src), '-o', out],
    { timeoutMs: 60_000 },
  );
  return out;
}

function counter(obj: BpfObject, idx: number): bigint {
  const v = obj.map('pkt_count').lookup(u32(idx));
  if (!v) throw new Error(`no counter ${idx}`);
  return readU64(v);
}

async function waitFor(cond: () => boolean, ms = 3000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return cond();
}

describe.skipIf(skipReason !== undefined)(`libbpf binding${skipReason ? ` (skipped: ${skipReason})` : ''}`, () => {
  let tmp: string;
  let countObjPath: string;
  let badObjPath: string;
  let pinnedObjPath: string;
  let xdpObjPath: string;
  let obj: BpfObject;
  let pinDir: string | undefined;
  const ns = `nwf-test-bpf-${randomBytes(4).toString('hex')}`;
  let nsCreated = false;
  let python: string | undefined;

  /** Send raw frames out of `ifname` in the test namespace (AF_PACKET via python3). */
  async function send(ifname: string, frames: Buffer[]): Promise<void> {
    if (!python) throw new Error('python3 is not available');
    const script =
      'import socket,sys\n' +
      's=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\n' +
      's.bind((sys.argv[1],0))\n' +
      'for h in sys.argv[2:]: s.send(bytes.fromhex(h))\n';
    await run.run(['ip', 'netns', 'exec', ns, python, '-c', script, ifname, ...frames.map((f) => f.toString('hex'))], {
      timeoutMs: 15_000,
    });
  }

  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'nwf-libbpf-'));
    [countObjPath, badObjPath, pinnedObjPath, xdpObjPath] = await Promise.all([
      compile('tc_count.bpf.c', tmp),
      compile('bad_oob.bpf.c', tmp),
      compile('pinned.bpf.c', tmp),
      compile('xdp_count.bpf.c', tmp),
    ]);
    obj = BpfObject.open(countObjPath).load();
    for (const p of ['/usr/bin/python3', 'python3']) {
      if ((await execa(p, ['-c', 'import socket; socket.AF_PACKET'], { reject: false, timeout: 10_000 })).exitCode === 0) {
        python = p;
        break;
      }
    }
    // A namespace with a veth pair, IPv6 off so the kernel sends no frames of its own.
    await run.run(['ip', 'netns', 'add', ns], { timeoutMs: 10_000 });
    nsCreated = true;
    await run.run(['ip', 'netns', 'exec', ns, 'sysctl', '-q', '-w', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1'], {
      timeoutMs: 10_000,
    });
    await run.run(['ip', '-n', ns, 'link', 'add', 'veth0', 'type', 'veth', 'peer', 'name', 'veth1'], { timeoutMs: 10_000 });
    await run.run(['ip', '-n', ns, 'link', 'set', 'veth0', 'up'], { timeoutMs: 10_000 });
    await run.run(['ip', '-n', ns, 'link', 'set', 'veth1', 'up'], { timeoutMs: 10_000 });
  });

  afterAll(async () => {
    obj?.close();
    if (nsCreated) await run.run(['ip', 'netns', 'del', ns], { check: false, timeoutMs: 10_000 });
    if (pinDir) rmSync(pinDir, { recursive: true, force: true });
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it('opens and loads an object, listing programs and maps', () => {
    expect(obj.loaded).toBe(true);
    expect(obj.name).toBe('tc_count'); // libbpf cuts the file name at the first dot
    const progs = obj.programs();
    expect(progs.map((p) => p.name)).toEqual(['tc_count', 'tc_pass']);
    const p = obj.program('tc_count');
    expect(p.section).toBe('tc');
    expect(p.type).toBe(BpfProgType.SCHED_CLS);
    expect(p.typeName).toBe('sched_cls');
    expect(p.fd).toBeGreaterThan(2);
    expect(p.id).toBeGreaterThan(0);
    expect(obj.findProgram('nope')).toBeUndefined();
    expect(() => obj.program('nope')).toThrow(BpfError);

    const names = obj.maps().map((m) => m.name);
    expect(names).toEqual(expect.arrayContaining(['pkt_count', 'pcpu_count', 'blocked']));
    const cnt = obj.map('pkt_count');
    expect([cnt.type, cnt.keySize, cnt.valueSize, cnt.maxEntries]).toEqual([BpfMapType.ARRAY, 4, 8, 4]);
    const blocked = obj.map('blocked');
    expect([blocked.type, blocked.keySize, blocked.valueSize, blocked.maxEntries]).toEqual([BpfMapType.HASH, 2, 1, 64]);
  });

  it('updates, looks up, deletes and iterates map entries, honouring BPF_NOEXIST / BPF_EXIST', () => {
    const m = obj.map('blocked');
    const k1 = Buffer.from([0x12, 0x34]);
    const k2 = new Uint8Array([0xab, 0xcd]);
    expect(m.lookup(k1)).toBeUndefined();
    m.update(k1, Buffer.from([1]));
    m.update(k2, new Uint8Array([2]), BPF_NOEXIST);
    expect(m.lookup(k1)).toEqual(Buffer.from([1]));
    expect(m.lookup(k2)).toEqual(Buffer.from([2]));

    const keys = [...m.keys()].map((k) => k.toString('hex')).sort();
    expect(keys).toEqual(['1234', 'abcd']);
    expect(new Map([...m.entries()].map(([k, v]) => [k.toString('hex'), v[0]]))).toEqual(
      new Map([
        ['1234', 1],
        ['abcd', 2],
      ]),
    );

    const exists = (() => {
      try {
        m.update(k1, Buffer.from([9]), BPF_NOEXIST);
      } catch (e) {
        return e;
      }
    })();
    expect(exists).toBeInstanceOf(BpfError);
    expect((exists as BpfError).code).toBe(CODES.BPF_FAILED);
    expect((exists as BpfError).details.errno).toBe(17);
    expect((exists as BpfError).details.errnoName).toBe('EEXIST');
    expect((exists as BpfError).message).toMatch(/bpf_map_update_elem .*blocked.*File exists/);

    m.update(k1, Buffer.from([3]), BPF_EXIST);
    expect(m.lookup(k1)).toEqual(Buffer.from([3]));
    expect(() => m.update(Buffer.from([0, 1]), Buffer.from([1]), BPF_EXIST)).toThrow(/No such file or directory/);

    expect(m.delete(k1)).toBe(true);
    expect(m.delete(k1)).toBe(false);
    expect(m.lookup(k1)).toBeUndefined();
    expect(m.delete(k2)).toBe(true);
    expect([...m.keys()]).toEqual([]);

    // Wrong sizes are refused before the syscall.
    expect(() => m.lookup(Buffer.from([1, 2, 3]))).toThrow(/2-byte key/);
    expect(() => m.update(k1, Buffer.from([1, 2]))).toThrow(/1-byte value/);

    // An array map has every key.
    expect([...obj.map('pkt_count').keys()].map((k) => k.readUInt32LE(0))).toEqual([0, 1, 2, 3]);

    // BPF_MAP_UPDATE_BATCH: three entries in one call; sizes checked before the syscall
    m.updateBatch(Buffer.from([0, 1, 0, 2, 0, 3]), Buffer.from([7, 8, 9]), 3);
    expect(new Map([...m.entries()].map(([k, v]) => [k.toString('hex'), v[0]]))).toEqual(new Map([['0001', 7], ['0002', 8], ['0003', 9]]));
    expect(() => m.updateBatch(Buffer.from([0, 1]), Buffer.from([7, 8]), 2)).toThrow(/2 keys of 2 bytes/);
    for (const k of [...m.keys()]) m.delete(k);
  });

  it('runs the program with BPF_PROG_TEST_RUN: 0x88b5 is dropped, IPv4 passes, counters count', () => {
    const p = obj.program('tc_count');
    const seen0 = counter(obj, CNT_SEEN);
    const dropped0 = counter(obj, CNT_DROPPED);

    const shot = p.testRun(frame(0x88b5));
    expect(shot.retval).toBe(TC_ACT.SHOT);

    const v4 = ipv4Frame();
    const ok = p.testRun(v4, { repeat: 5 });
    expect(ok.retval).toBe(TC_ACT.OK);
    expect(ok.dataOut.equals(v4)).toBe(true);

    expect(counter(obj, CNT_SEEN) - seen0).toBe(6n);
    expect(counter(obj, CNT_DROPPED) - dropped0).toBe(1n);

    // The blocked map changes the verdict for another EtherType.
    const blocked = obj.map('blocked');
    expect(p.testRun(frame(0x88b6)).retval).toBe(TC_ACT.OK);
    blocked.update(Buffer.from([0x88, 0xb6]), Buffer.from([1]));
    expect(p.testRun(frame(0x88b6)).retval).toBe(TC_ACT.SHOT);
    blocked.delete(Buffer.from([0x88, 0xb6]));

    // A context (struct __sk_buff) goes in and comes back out.
    const ctx = Buffer.alloc(192);
    ctx.writeUInt32LE(0x1234, 8); // mark
    const withCtx = p.testRun(v4, { ctxIn: ctx });
    expect(withCtx.retval).toBe(TC_ACT.OK);
    expect(withCtx.ctxOut?.readUInt32LE(8)).toBe(0x1234);

    // Too short for an Ethernet header: the kernel refuses.
    expect(() => p.testRun(Buffer.alloc(4))).toThrow(BpfError);
  });

  it('reads and writes per-CPU values', () => {
    const m = obj.map('pcpu_count');
    expect(m.isPerCpu).toBe(true);
    const ncpu = numPossibleCpus();
    expect(ncpu).toBeGreaterThan(0);
    m.update(u32(0), Buffer.alloc(8)); // one value, written to every CPU
    obj.program('tc_count').testRun(frame(0x0800), { repeat: 3 });
    const per = m.lookupPerCpu(u32(0))!;
    expect(per).toHaveLength(ncpu);
    expect(per.reduce((a, b) => a + readU64(b), 0n)).toBe(3n);
    m.updatePerCpu(
      u32(0),
      per.map((_, i) => Buffer.from(new BigUint64Array([BigInt(i + 10)]).buffer)),
    );
    expect(m.lookupPerCpu(u32(0))!.map((b) => readU64(b))).toEqual(per.map((_, i) => BigInt(i + 10)));
    expect(() => m.updatePerCpu(u32(0), Array.from({ length: ncpu + 1 }, () => Buffer.alloc(8)))).toThrow(/per-CPU values/);
  });

  it('reports a program the verifier rejects with errno and the verifier log', () => {
    const bad = BpfObject.open(badObjPath);
    try {
      let err: unknown;
      try {
        bad.load();
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(BpfError);
      expect(err).toBeInstanceOf(NwfError);
      const e = err as BpfError;
      expect(e.code).toBe(CODES.BPF_FAILED);
      expect(e.message).toMatch(/^bpf_object__load .*bad_oob/);
      expect([13, 22]).toContain(e.details.errno); // EACCES (or EINVAL)
      expect(e.details.strerror).toBeTruthy();
      expect(e.log.join('\n')).toMatch(/BEGIN PROG LOAD LOG/);
      expect(e.verifierLog).toMatch(/invalid access to packet/);
      expect(e.verifierLog).toMatch(/R1/);
      expect(e.message).toMatch(/verifier: .*invalid access to packet/);
      expect(e.format()).toContain('hint: verifier:');
      expect(JSON.parse(JSON.stringify(e))).toMatchObject({ code: CODES.BPF_FAILED, errno: e.details.errno, op: 'bpf_object__load' });
    } finally {
      bad.close();
    }
  });

  it('fails to open a missing object file with ENOENT', () => {
    let err: unknown;
    try {
      BpfObject.open(join(tmp, 'missing.o'));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(BpfError);
    expect((err as BpfError).details).toMatchObject({ op: 'bpf_object__open_file', errno: 2, errnoName: 'ENOENT' });
    expect((err as BpfError).log.join('\n')).toMatch(/failed to open/);
  });

  it('pins maps and programs in bpffs and reopens them', () => {
    const dir = ensureBpffs(`/sys/fs/bpf/nwf-test-${randomBytes(4).toString('hex')}`);
    pinDir = dir;
    expect(isBpffs('/sys/fs/bpf')).toBe(true);
    expect(isBpffs(dir)).toBe(true);
    expect(ensureBpffs(dir)).toBe(dir); // idempotent

    const m = obj.map('blocked');
    const mapPin = join(dir, 'blocked');
    m.pin(mapPin);
    expect(existsSync(mapPin)).toBe(true);
    const pinned = openPinnedMap(mapPin);
    try {
      expect(pinned.id).toBe(m.id);
      expect([pinned.name, pinned.type, pinned.keySize, pinned.valueSize, pinned.maxEntries]).toEqual([
        'blocked',
        BpfMapType.HASH,
        2,
        1,
        64,
      ]);
      pinned.update(Buffer.from([0x99, 0x99]), Buffer.from([7]));
      expect(m.lookup(Buffer.from([0x99, 0x99]))).toEqual(Buffer.from([7]));
      expect(pinned.delete(Buffer.from([0x99, 0x99]))).toBe(true);
    } finally {
      pinned.close();
    }
    m.unpin(mapPin);
    expect(existsSync(mapPin)).toBe(false);

    const p = obj.program('tc_count');
    const progPin = join(dir, 'tc_count');
    p.pin(progPin);
    const pp = openPinnedProgram(progPin);
    try {
      expect(pp.id).toBe(p.id);
      expect(pp.name).toBe('tc_count');
      expect(pp.testRun(frame(0x88b5)).retval).toBe(TC_ACT.SHOT);
    } finally {
      pp.close();
    }
    p.unpin(progPin);
    expect(existsSync(progPin)).toBe(false);

    expect(() => openPinnedMap(join(dir, 'nothing'))).toThrow(/bpf_obj_get .*No such file/);

    // pinRoot: a LIBBPF_PIN_BY_NAME map is pinned there, and reused by the next load.
    const a = BpfObject.open(pinnedObjPath, { pinRoot: dir }).load();
    const b = BpfObject.open(pinnedObjPath, { pinRoot: dir });
    try {
      expect(existsSync(join(dir, 'shared_cfg'))).toBe(true);
      b.load();
      expect(b.map('shared_cfg').id).toBe(a.map('shared_cfg').id);
      a.map('shared_cfg').update(u32(0), u32(1));
      expect(b.program('tc_cfg').testRun(frame(0x0800)).retval).toBe(TC_ACT.SHOT);
    } finally {
      a.map('shared_cfg').unpin(join(dir, 'shared_cfg'));
      a.close();
      b.close();
    }
  });

  it('withNetns runs sync and async code in the namespace and always switches back', async () => {
    const root = currentNetnsInode();
    const inner = withNetns(ns, () => currentNetnsInode());
    expect(inner).not.toBe(root);
    expect(currentNetnsInode()).toBe(root);
    expect(() =>
      withNetns(ns, () => {
        throw new Error('boom');
      }),
    ).toThrow('boom');
    expect(currentNetnsInode()).toBe(root);
    await expect(
      withNetns(ns, async () => {
        await new Promise((r) => setTimeout(r, 5));
        expect(currentNetnsInode()).toBe(inner);
        throw new Error('async boom');
      }),
    ).rejects.toThrow('async boom');
    expect(currentNetnsInode()).toBe(root);
    expect(() => withNetns('nwf-no-such-ns-x', () => 1)).toThrow(/\/run\/netns\/nwf-no-such-ns-x/);
    expect(() => withNetns('../etc', () => 1)).toThrow(NwfError);
    expect(withNetns(ns, () => ifIndex('veth0'))).toBeGreaterThan(0);
    expect(() => withNetns(ns, () => ifIndex('nope0'))).toThrow(/if_nametoindex/);
  });

  it('attaches with tc clsact, queries, replaces in place and detaches (in a test namespace)', async () => {
    const root = currentNetnsInode();
    const tcCount = obj.program('tc_count');
    const tcPass = obj.program('tc_pass');
    const ifindex = withNetns(ns, () => ifIndex('veth0'));
    const spec: TcFilterSpec = { ifindex, direction: 'ingress', handle: 1, priority: 1 };

    withNetns(ns, () => {
      expect(currentNetnsInode()).not.toBe(root);
      expect(tcHookCreate(ifindex)).toBe(true);
      expect(tcHookCreate(ifindex)).toBe(false); // already there
      expect(tcQuery(spec)).toBeUndefined();
      const att = tcAttach(tcCount, spec);
      expect(att).toEqual({ ...spec, progId: tcCount.id });
      expect(tcQuery(spec)?.progId).toBe(tcCount.id);
      // A second attach on the same handle/priority is refused...
      expect(() => tcAttach(tcCount, spec)).toThrow(/File exists/);
      // ... egress is a separate hook.
      const egress: TcFilterSpec = { ...spec, direction: 'egress' };
      expect(tcAttach(tcPass, egress).progId).toBe(tcPass.id);
      expect(tcQuery(egress)?.progId).toBe(tcPass.id);
      expect(tcDetach(egress)).toBe(true);
      expect(tcQuery(egress)).toBeUndefined();
    });
    const out = await run.run(['tc', '-n', ns, 'filter', 'show', 'dev', 'veth0', 'ingress'], { timeoutMs: 10_000 });
    expect(out.stdout).toMatch(/tc_count.*direct-action/);

    if (python) {
      const seen0 = counter(obj, CNT_SEEN);
      const dropped0 = counter(obj, CNT_DROPPED);
      await send('veth1', [frame(0x88b5), ipv4Frame()]);
      expect(await waitFor(() => counter(obj, CNT_DROPPED) - dropped0 === 1n)).toBe(true);
      expect(counter(obj, CNT_SEEN) - seen0).toBeGreaterThanOrEqual(2n);
    }

    withNetns(ns, () => {
      const rep = tcReplace(tcPass, spec);
      expect(rep).toEqual({ ...spec, progId: tcPass.id });
      expect(tcQuery(spec)?.progId).toBe(tcPass.id);
    });
    const after = await run.run(['tc', '-n', ns, 'filter', 'show', 'dev', 'veth0', 'ingress'], { timeoutMs: 10_000 });
    expect(after.stdout).toMatch(/tc_pass/);
    expect(after.stdout).not.toMatch(/tc_count/);
    expect(after.stdout.match(/direct-action/g)).toHaveLength(1); // replaced, not added

    if (python) {
      const alt0 = counter(obj, CNT_PASS_ALT);
      const dropped0 = counter(obj, CNT_DROPPED);
      await send('veth1', [frame(0x88b5)]);
      expect(await waitFor(() => counter(obj, CNT_PASS_ALT) - alt0 >= 1n)).toBe(true);
      expect(counter(obj, CNT_DROPPED)).toBe(dropped0);
    }

    withNetns(ns, () => {
      expect(tcDetach(spec)).toBe(true);
      expect(tcDetach(spec)).toBe(false);
      expect(tcQuery(spec)).toBeUndefined();
      expect(tcHookDestroy(ifindex)).toBe(true);
    });
    const qd = await run.run(['tc', '-n', ns, 'qdisc', 'show', 'dev', 'veth0'], { timeoutMs: 10_000 });
    expect(qd.stdout).not.toMatch(/clsact/);
  });

  it('attaches many ports with batched rtnetlink requests (rtnl.ts): clsact created or kept, filters created and replaced in place, the first failure thrown', async () => {
    const tcCount = obj.program('tc_count');
    const tcPass = obj.program('tc_pass');
    const devs = Array.from({ length: 6 }, (_, i) => `vb${i}`);
    for (const d of devs) await run.run(['ip', '-n', ns, 'link', 'add', d, 'type', 'veth', 'peer', 'name', `${d}p`], { timeoutMs: 10_000 });
    try {
      // another tool's clsact and filter on vb0: kept (EEXIST is no failure), its filter untouched
      await run.run(['tc', '-n', ns, 'qdisc', 'add', 'dev', 'vb0', 'clsact'], { timeoutMs: 10_000 });
      const foreign: TcFilterSpec = { ifindex: withNetns(ns, () => ifIndex('vb0')), direction: 'ingress', handle: 7, priority: 7 };
      withNetns(ns, () => tcAttach(tcPass, foreign));
      const spec = (ifindex: number, direction: 'ingress' | 'egress'): TcFilterSpec => ({ ifindex, direction, handle: 0x4e57, priority: 0x4e57 });
      withNetns(ns, () => {
        const ix = devs.map((d) => ifIndex(d));
        const reqs = (ingress: typeof tcCount, egress: typeof tcCount): TcRequest[] =>
          ix.flatMap((i) => [{ kind: 'clsact' as const, ifindex: i }, { kind: 'filter' as const, ...spec(i, 'ingress'), prog: ingress }, { kind: 'filter' as const, ...spec(i, 'egress'), prog: egress }]);
        const first = tcRequests(reqs(tcCount, tcPass));
        expect(first).toHaveLength(3 * devs.length);
        expect(first.every(tcRequestOk)).toBe(true);
        expect(first[0]?.errno).toBe(EEXIST); // vb0's clsact was there
        for (const i of ix) {
          expect(tcQuery(spec(i, 'ingress'))?.progId).toBe(tcCount.id);
          expect(tcQuery(spec(i, 'egress'))?.progId).toBe(tcPass.id);
        }
        // again with the programs swapped: replaced in place
        expect(tcRequests(reqs(tcPass, tcCount)).every(tcRequestOk)).toBe(true);
        for (const i of ix) {
          expect(tcQuery(spec(i, 'ingress'))?.progId).toBe(tcPass.id);
          expect(tcQuery(spec(i, 'egress'))?.progId).toBe(tcCount.id);
        }
        // a device that does not exist fails alone; the requests after it are still answered
        const bad = tcRequests([{ kind: 'filter', ...spec(999_999, 'ingress'), prog: tcCount }, { kind: 'filter', ...spec(ix[1] as number, 'ingress'), prog: tcCount }]);
        expect(bad.map((r) => tcRequestOk(r))).toEqual([false, true]);
        expect(bad[0]?.errno).toBeGreaterThan(0);
        expect(tcRequestError(bad[0] as (typeof bad)[number])).toBeInstanceOf(BpfError);
        expect(tcQuery(spec(ix[1] as number, 'ingress'))?.progId).toBe(tcCount.id);
        // attachPorts (hook.ts) throws the failure of a batch
        expect(() => attachPorts([{ port: { iface: 'gone', ifindex: 999_999 }, programs: { out: tcCount, in: tcPass } }], { out: 'tc', in: 'tc' }, tmp)).toThrow(BpfError);
        expect(tcQuery(foreign)?.progId).toBe(tcPass.id);
      });
      const out = await run.run(['tc', '-n', ns, 'filter', 'show', 'dev', 'vb0', 'ingress'], { timeoutMs: 10_000 });
      expect(out.stdout.match(/direct-action/g)).toHaveLength(2); // the other tool's and ours, none added by the replace
    } finally {
      for (const d of devs) await run.run(['ip', '-n', ns, 'link', 'del', d], { check: false, timeoutMs: 10_000 });
    }
  });

  it('attaches with a tcx link, updates it atomically, pins and detaches it', async (ctx) => {
    const tcCount = obj.program('tc_count');
    const tcPass = obj.program('tc_pass');
    const ifindex = withNetns(ns, () => ifIndex('veth0'));
    let link: BpfLink;
    try {
      link = withNetns(ns, () => attachTcx(tcCount, ifindex, 'ingress'));
    } catch (e) {
      if (e instanceof BpfError && [22, 95, 524].includes(e.details.errno)) {
        ctx.skip(`kernel refused a tcx link (${e.details.errnoName ?? e.details.errno}): tcx needs Linux >= 6.6`);
      }
      throw e;
    }
    try {
      const info = link.info();
      expect(info.type).toBe(BpfLinkType.TCX);
      expect(info.progId).toBe(tcCount.id);
      expect(info.tcx).toEqual({ ifindex, attachType: BPF_TCX_INGRESS });

      if (python) {
        const dropped0 = counter(obj, CNT_DROPPED);
        await send('veth1', [frame(0x88b5)]);
        expect(await waitFor(() => counter(obj, CNT_DROPPED) - dropped0 === 1n)).toBe(true);
      }

      // Atomic swap; with `expect`, only if the current program matches.
      link.update(tcPass, { expect: tcCount });
      expect(link.info().progId).toBe(tcPass.id);
      expect(() => link.update(tcCount, { expect: tcCount })).toThrow(/Operation not permitted/);
      expect(link.info().progId).toBe(tcPass.id);

      if (python) {
        const alt0 = counter(obj, CNT_PASS_ALT);
        await send('veth1', [frame(0x88b5)]);
        expect(await waitFor(() => counter(obj, CNT_PASS_ALT) - alt0 >= 1n)).toBe(true);
      }

      const dir = pinDir ?? (pinDir = ensureBpffs(`/sys/fs/bpf/nwf-test-${randomBytes(4).toString('hex')}`));
      const linkPin = join(dir, 'tcx_veth0_ingress');
      link.pin(linkPin);
      const again = openPinnedLink(linkPin);
      try {
        expect(again.info().id).toBe(info.id);
      } finally {
        again.close();
      }
      link.unpin(linkPin);
      expect(existsSync(linkPin)).toBe(false);

      link.detach();
      expect(link.info().tcx?.ifindex).toBe(0);
      if (python) {
        const alt0 = counter(obj, CNT_PASS_ALT);
        const seen0 = counter(obj, CNT_SEEN);
        await send('veth1', [frame(0x88b5)]);
        await new Promise((r) => setTimeout(r, 200));
        expect(counter(obj, CNT_PASS_ALT)).toBe(alt0);
        expect(counter(obj, CNT_SEEN)).toBe(seen0);
      }
    } finally {
      link.close();
    }
    expect(link.closed).toBe(true);
  });

  it('puts a tcx link first on its hook, ahead of the links already there (BPF_F_BEFORE)', async (ctx) => {
    const tcCount = obj.program('tc_count');
    const tcPass = obj.program('tc_pass');
    if (!kernelHasTcx(tcCount)) ctx.skip('this kernel has no tcx (Linux >= 6.6)');
    const ifindex = withNetns(ns, () => ifIndex('veth0'));
    // tc_pass ends the hook for every frame (TC_ACT_OK is TCX_PASS): a program after it never runs
    const last = withNetns(ns, () => attachTcx(tcPass, ifindex, 'ingress'));
    const first = withNetns(ns, () => attachTcx(tcCount, ifindex, 'ingress', { first: true }));
    try {
      if (python) {
        const dropped0 = counter(obj, CNT_DROPPED);
        const alt0 = counter(obj, CNT_PASS_ALT);
        await send('veth1', [frame(0x88b5), frame(0x0800)]);
        // tc_count ran first: it dropped 0x88b5 and ended the hook for 0x0800 (TCX_PASS), so tc_pass never ran
        expect(await waitFor(() => counter(obj, CNT_DROPPED) - dropped0 === 1n)).toBe(true);
        await new Promise((r) => setTimeout(r, 100));
        expect(counter(obj, CNT_PASS_ALT)).toBe(alt0);
      }
    } finally {
      first.close();
      last.close();
    }
  });

  it('probes tcx without attaching anything', () => {
    const tcCount = obj.program('tc_count');
    // this kernel (6.18) has tcx; the probe asks for ifindex 0, which no interface has
    expect(kernelHasTcx(tcCount)).toBe(true);
    const out = withNetns(ns, () => ifIndex('veth0'));
    expect(out).toBeGreaterThan(0);
  });

  it('attaches an XDP link, updates it atomically, refuses a second XDP program, and detaches it', async () => {
    const xobj = BpfObject.open(xdpObjPath).load();
    const xcount = (i: number): bigint => readU64(xobj.map('xdp_count_map').lookup(u32(i)) as Buffer);
    const ifindex = withNetns(ns, () => ifIndex('veth0'));
    const link = withNetns(ns, () => attachXdp(xobj.program('xdp_count'), ifindex));
    try {
      const info = link.info();
      expect(info.type).toBe(BpfLinkType.XDP);
      expect(info.progId).toBe(xobj.program('xdp_count').id);
      expect(info.xdp).toEqual({ ifindex });
      const shown = await run.run(['ip', '-n', ns, '-d', 'link', 'show', 'dev', 'veth0'], { timeoutMs: 10_000 });
      expect(shown.stdout).toMatch(/prog\/xdp id \d+/);
      if (python) {
        // veth0 runs XDP on what veth1 sends
        const dropped0 = xcount(CNT_DROPPED);
        await send('veth1', [frame(0x88b5)]);
        expect(await waitFor(() => xcount(CNT_DROPPED) - dropped0 === 1n)).toBe(true);
      }
      link.update(xobj.program('xdp_pass'), { expect: xobj.program('xdp_count') });
      expect(link.info().progId).toBe(xobj.program('xdp_pass').id);
      if (python) {
        const alt0 = xcount(CNT_PASS_ALT);
        await send('veth1', [frame(0x88b5)]);
        expect(await waitFor(() => xcount(CNT_PASS_ALT) - alt0 === 1n)).toBe(true);
      }
      // one XDP program per interface (and mode): another link is refused
      let err: unknown;
      try {
        withNetns(ns, () => attachXdp(xobj.program('xdp_count'), ifindex)).close();
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(BpfError);
      expect((err as BpfError).details.errnoName).toBe('EBUSY');
      link.detach();
      expect(link.info().xdp?.ifindex).toBe(0);
      const after = await run.run(['ip', '-n', ns, '-d', 'link', 'show', 'dev', 'veth0'], { timeoutMs: 10_000 });
      expect(after.stdout).not.toMatch(/prog\/xdp/);
    } finally {
      link.close();
      xobj.close();
    }
  });
});
