// The pipeline (src/compile.ts) and generation storage (host/generation.ts)
// without a kernel: a generation's id comes from its artifacts in memory, it
// is written and read back as it was compiled, an edited file is refused,
// and its eBPF objects are built by clang through the CommandRunner
// (recorded here) with a cache.
import { existsSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { compileGeneration, generationId, sha256 } from '../../src/compile.js';
import { CLANG_FLAGS } from '../../src/host/bpf-build.js';
import { readGeneration, readPolicy, writeGeneration } from '../../src/host/generation.js';
import { RecordingRunner } from '../../src/host/runner.js';
import { loadSources } from '../../src/resolve/sources.js';
import { CODES, NwfError } from '../../src/util/errors.js';
import { bindingXml, tempDir } from '../support/policy.js';

const dirs: string[] = [];
const temp = (files: Record<string, string> = {}): string => {
  const d = tempDir(files);
  dirs.push(d);
  return d;
};
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

const sources = () => {
  const b = temp({ 'vnet0.xml': bindingXml('vnet0', '52:54:00:00:00:01', 'clean-traffic', { IP: '10.0.0.2' }), 'vnet1.xml': bindingXml('vnet1', '52:54:00:00:00:02', 'clean-traffic', { IP: '10.0.0.3' }) });
  return loadSources({ filterDirs: [], bundled: true, bindingPaths: [b], domainPaths: [], libvirt: false });
};

/** A clang that writes a placeholder object where -o says, and records what it was asked. */
function fakeClang(fail?: string) {
  return new RecordingRunner((argv) => {
    if (argv[1] === '--version') return { stdout: 'clang version 19.0.0 (fake)\n' };
    if (fail) return { exitCode: 1, stderr: fail };
    writeFileSync(argv[argv.indexOf('-o') + 1] as string, 'not really an object');
    return {};
  });
}

describe('a generation in memory', () => {
  it('nft: the id is the hash of the nft parts; the manifest names the inputs, interfaces and the policy hash', () => {
    const src = sources();
    const g = compileGeneration(src, 'nft');
    expect(g.id).toBe(sha256(g.files.nftParts).slice(0, 16));
    expect(g.id).toBe(generationId(g.files.nftParts, undefined));
    expect(g.manifest.failed).toEqual([]);
    const parts = JSON.parse(g.files.nftParts);
    expect(parts.ports.map((p: { iface: string; status: string }) => [p.iface, p.status])).toEqual([
      ['vnet0', 'protected'],
      ['vnet1', 'protected'],
    ]);
    expect(parts.shapes.length).toBeGreaterThan(0);
    expect(g.manifest).toMatchObject({ id: g.id, backend: 'nft', l3: false, policySha256: sha256(g.files.policy) });
    expect(g.manifest.interfaces.map((i) => [i.iface, i.l3Rules])).toEqual([
      ['vnet0', 0],
      ['vnet1', 0],
    ]);
    expect(g.manifest.interfaces[0]!.l2Rules).toBeGreaterThan(5);
    expect(g.manifest.inputs.map((i) => i.file)).toEqual([...new Set(src.files)]);
    expect(g.files.nftText).toContain('table bridge nwf_fast');
    expect(g.bpf).toBeUndefined();
    // the same sources: the same id (createdAt aside)
    expect(compileGeneration(src, 'nft').id).toBe(g.id);
  });

  it('bpf: nft only dispatches (accept behind the eBPF gate) and fails closed; the id covers the eBPF index (shapes and every map value)', () => {
    const g = compileGeneration(sources(), 'bpf');
    expect(g.nft.parts.shapes).toEqual([]);
    expect(g.files.nftText).toContain('add element bridge nwf_fast from_vm { "vnet0" : goto gatec-out }');
    expect(g.files.nftText).toContain('add element bridge nwf_fast gate_from_vm { "vnet0" : accept }');
    const index = JSON.parse(g.files.bpfIndex as string);
    expect(index.shapes).toHaveLength(1);
    expect(index.interfaces.map((i: { iface: string }) => i.iface)).toEqual(['vnet0', 'vnet1']);
    expect(g.id).toBe(sha256(g.files.nftParts + g.files.bpfIndex).slice(0, 16));
    expect(g.bpf?.shapes[0]?.header).toContain('nwf_policy');
  });
});

describe('generations on disk', () => {
  it('written and read back as compiled; the manifest is written last', async () => {
    const g = compileGeneration(sources(), 'nft');
    const dir = join(temp(), 'gen');
    const m = await writeGeneration(dir, g);
    expect(m).toEqual(g.manifest);
    expect(readFileSync(join(dir, 'nft.json'), 'utf8')).toBe(g.files.nftJson + '\n');
    const back = readGeneration(dir);
    expect(back.manifest).toEqual(g.manifest);
    expect(back.parts).toEqual(JSON.parse(g.files.nftParts));
    expect(readPolicy(dir)).toEqual(JSON.parse(g.files.policy));
    expect(back.bpf).toBeUndefined();
  });

  it('an edited policy or nft part is refused (the parts are what load applies)', async () => {
    const g = compileGeneration(sources(), 'nft');
    for (const [file, edit] of [
      ['policy.json', (s: string) => s.replace('10.0.0.2', '10.0.0.7')],
      ['nft-parts.json', (s: string) => s.replace('10.0.0.2', '10.0.0.7')],
    ] as const) {
      const dir = join(temp(), 'gen');
      await writeGeneration(dir, g);
      writeFileSync(join(dir, file), edit(readFileSync(join(dir, file), 'utf8')));
      const err = (() => {
        try {
          readGeneration(dir);
        } catch (e) {
          return e;
        }
      })();
      expect(err, file).toBeInstanceOf(NwfError);
      expect((err as NwfError).code).toBe(CODES.STATE_INVALID);
      expect((err as NwfError).message).toContain('does not match its manifest');
    }
  });

  it('both: clang runs through the runner once per shape, objects land in bpf/, a second write comes from the cache', async () => {
    const g = compileGeneration(sources(), 'both');
    const cacheDir = temp();
    const runner = fakeClang();
    const dir = join(temp(), 'gen');
    await writeGeneration(dir, g, { cacheDir, runner });
    expect(runner.calls.map((c) => c.argv.slice(0, 2))).toEqual([
      ['clang-19', '--version'],
      ['clang-19', ...CLANG_FLAGS.slice(0, 1)],
    ]);
    const compile = runner.calls[1]!;
    expect(compile.argv.slice(1, 1 + CLANG_FLAGS.length)).toEqual([...CLANG_FLAGS]);
    expect(compile.argv).toContain('-c');
    expect(compile.argv.find((a) => a.startsWith('-fdebug-prefix-map='))).toBeDefined();
    expect(compile.cwd).toMatch(/\.tmp-/);
    const shapeId = g.bpf!.shapes[0]!.shapeId;
    expect(readdirSync(join(dir, 'bpf'))).toEqual([`${shapeId}.bpf.o`]);
    expect(readFileSync(join(dir, 'bpf', `${shapeId}.bpf.o`), 'utf8')).toBe('not really an object');
    expect(existsSync(join(dir, '.bpf-build'))).toBe(false);
    const back = readGeneration(dir);
    expect(back.bpf?.interfaces.map((i) => [i.iface, i.object])).toEqual([
      ['vnet0', `bpf/${shapeId}.bpf.o`],
      ['vnet1', `bpf/${shapeId}.bpf.o`],
    ]);
    const again = fakeClang();
    await writeGeneration(join(temp(), 'gen'), g, { cacheDir, runner: again });
    expect(again.calls.filter((c) => c.argv[1] !== '--version')).toEqual([]);
  });
});
