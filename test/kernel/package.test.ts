// What an operator installs: `npm pack` of a checkout as git has it (no dist/:
// the prepare script builds it), installed into an empty directory, runs `nwf-fast
// --version`, `help`, and `compile` on the bundled example for both backends,
// and refuses a Node.js older than package.json's engines. Needs no root, but
// runs here with the kernel tests because it is slow (a TypeScript build and
// an npm install) and needs clang for the eBPF objects.
//
// The install uses --prefer-offline: the npm cache that `npm ci` fills holds
// the dependencies' tarballs but not their registry metadata, which npm needs
// to resolve a package's dependencies without a lock file, so on a fresh
// machine the install fetches that metadata from the registry (`--offline`
// fails there with ENOTCACHED) and reuses the cached tarballs.
import { execa } from 'execa';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const REPO = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const work = mkdtempSync(join(tmpdir(), 'nwf-fast-pkg-'));
const checkout = join(work, 'checkout');
const prefix = join(work, 'install');
const bin = join(prefix, 'node_modules', '.bin', 'nwf-fast');
const installed = join(prefix, 'node_modules', 'nwf-fast');
let files: string[] = [];

const MINUTE = 60_000;

beforeAll(async () => {
  // The checkout as a clone would have it: tracked and untracked-but-not-ignored files, no dist/.
  const listed = (await execa('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: REPO })).stdout.split('\0').filter(Boolean);
  for (const f of listed) {
    if (f === 'node_modules' || !existsSync(join(REPO, f))) continue;
    mkdirSync(dirname(join(checkout, f)), { recursive: true });
    cpSync(join(REPO, f), join(checkout, f));
  }
  expect(existsSync(join(checkout, 'dist'))).toBe(false);
  symlinkSync(join(REPO, 'node_modules'), join(checkout, 'node_modules')); // typescript for the prepare script
  const pack = await execa('npm', ['pack', '--json', '--pack-destination', work], { cwd: checkout, timeout: 5 * MINUTE });
  const [info] = JSON.parse(pack.stdout.slice(pack.stdout.indexOf('['))) as { filename: string; files: { path: string }[] }[];
  files = (info?.files ?? []).map((f) => f.path);
  mkdirSync(prefix);
  writeFileSync(join(prefix, 'package.json'), '{ "private": true }\n');
  await execa('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error', join(work, info?.filename ?? 'missing.tgz')], {
    cwd: prefix,
    timeout: 5 * MINUTE,
  });
}, 12 * MINUTE);

afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('the npm package', () => {
  it('holds the CLI, the filters, the eBPF templates, the example, README and license, and no development files', () => {
    for (const f of [
      'package.json',
      'README.md',
      'LICENSE',
      'bin/nwf-fast.js',
      'dist/cli/main.js',
      'dist/cli/node-version.js',
      'filters/standard/clean-traffic.xml',
      'bpf/nwf.bpf.c',
      'bpf/lib/nwf_common.h',
      'examples/demo/bindings/vnet0.xml',
      'examples/demo/filters/web-server.xml',
    ]) {
      expect(files).toContain(f);
    }
    expect(files.filter((f) => f.startsWith('filters/standard/')).length).toBe(readdirSync(join(REPO, 'filters', 'standard')).length);
    const dev = files.filter((f) => /^(src|test|bench|scripts|\.ci|node_modules)\//.test(f) || /\.(map|ts)$/.test(f) || /^(tsconfig.*|vitest\.config\.ts|package-lock\.json)$/.test(f));
    expect(dev).toEqual([]);
  });

  it('nwf-fast --version prints the version', async () => {
    const r = await execa(bin, ['--version']);
    const { version } = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string };
    expect(r.stdout).toBe(`nwf-fast ${version}`);
  });

  it('nwf-fast help load shows the usage', async () => {
    const r = await execa(bin, ['help', 'load']);
    expect(r.stdout).toMatch(/^usage: nwf-fast load \[DIR\]/);
  });

  it('compiles the bundled example to an nftables ruleset', async () => {
    const ex = join(installed, 'examples', 'demo');
    const r = await execa(bin, ['compile', '--filters', join(ex, 'filters'), '--binding', join(ex, 'bindings')]);
    expect(r.stdout).toContain('add table bridge nwf_fast');
    for (const tap of ['vnet0', 'vnet1', 'vnet2', 'vnet3']) expect(r.stdout).toContain(tap);
  });

  it(
    'compiles the bundled example to eBPF objects plus the ruleset (templates and bundled filters found in the package)',
    async () => {
      const ex = join(installed, 'examples', 'demo');
      const out = join(work, 'gen');
      const r = await execa(bin, ['compile', '--filters', join(ex, 'filters'), '--binding', join(ex, 'bindings'), '--backend', 'both', '--out', out], {
        env: { NWF_FAST_CACHE: join(work, 'cache') },
      });
      expect(r.stderr).toMatch(/wrote generation [0-9a-f]+ \(both\)/);
      expect(readdirSync(join(out, 'bpf')).filter((f) => f.endsWith('.bpf.o')).length).toBeGreaterThan(0);
      expect(existsSync(join(out, 'nft.json'))).toBe(true);
    },
    3 * MINUTE,
  );

  it('refuses a Node.js older than engines before loading anything, saying which one it needs', async () => {
    const fake = join(work, 'old-node.mjs');
    writeFileSync(fake, "Object.defineProperty(process, 'versions', { value: { ...process.versions, node: '16.20.2' } });\n");
    const r = await execa('node', ['--import', fake, bin, '--version'], { reject: false });
    expect(r.exitCode).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('Node.js 16.20.2 is not supported');
    expect(r.stderr).toContain('^18.19.0 || >=20.5.0');
  });
});
