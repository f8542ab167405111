// What the prototypes share: the benchmark's ports and policy, loading a
// variant into a namespace and taking it out again, the kernel's bytecode of
// what is loaded, and the options of the scripts.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { bindingTexts, parseBindings, portIp, portMac, portName, resolveAll } from '../../../bench/lib/policy.js';
import { cmd, inNs, onCleanup, runCleanups } from '../../../bench/lib/util.js';
import type { PolicyIR } from '../../../src/ir/types.js';
import { UNLOAD_TEXT, type Port, type Ruleset } from './variants.js';

export const RESULTS_DIR = resolve(import.meta.dirname, 'results');

/** The benchmark's N ports (vnet0.., clean-traffic, one IP each) and their resolved policy. */
export function benchPorts(n: number): { ports: Port[]; ir: PolicyIR } {
  const ports = Array.from({ length: n }, (_, i) => ({ name: portName(i), mac: portMac(i), ips: [portIp(i)] }));
  return { ports, ir: resolveAll(parseBindings(bindingTexts(n))) };
}

let work: string | undefined;
/** A private scratch directory, removed by the cleanup registry. */
function scratch(): string {
  if (!work) {
    const dir = mkdtempSync(join(tmpdir(), 'nwf-optspec-'));
    work = dir;
    onCleanup('scratch directory', () => rmSync(dir, { recursive: true, force: true }));
  }
  return work;
}

/** nft reads a file (it cannot read a pipe as /dev/stdin here). */
export async function nftText(ns: string, text: string, json: boolean): Promise<void> {
  await nftFile(ns, text, json);
}

async function nftFile(ns: string, text: string, json: boolean, check = true): Promise<void> {
  const f = join(scratch(), json ? 'ruleset.json' : 'ruleset.nft');
  writeFileSync(f, text);
  await inNs(ns, ['nft', ...(json ? ['-j'] : []), '-f', f], { timeoutMs: 300_000, check });
}

/** Loads a variant into `ns` (one nft transaction), bounded in time. */
export async function loadRuleset(ns: string, r: Ruleset): Promise<number> {
  const t = performance.now();
  await nftFile(ns, r.body, r.format === 'json');
  return performance.now() - t;
}

export async function unloadRuleset(ns: string): Promise<void> {
  await nftFile(ns, UNLOAD_TEXT, false, false);
}

/** The kernel's bytecode of the loaded bridge table, and the rules' text by handle. */
export async function bytecode(ns: string, family: 'bridge' | 'netdev'): Promise<{ dump: string; text: Map<number, string> }> {
  const r = await inNs(ns, ['nft', '-a', '--debug=netlink', 'list', 'table', family, 'nwf_fast'], { timeoutMs: 120_000 });
  const text = new Map<number, string>();
  for (const line of r.stdout.split('\n')) {
    const m = /^\s+(.*\S) # handle (\d+)$/.exec(line);
    if (m && !(m[1] as string).endsWith('{')) text.set(Number(m[2]), m[1] as string);
  }
  return { dump: r.stdout, text };
}

/** Interface indexes in `ns` (for the variant keyed by ifindex). */
export async function ifindexes(ns: string): Promise<Map<string, number>> {
  const r = await cmd(['ip', '-j', '-n', ns, 'link', 'show']);
  const links = JSON.parse(r.stdout) as { ifindex: number; ifname: string }[];
  return new Map(links.map((l) => [l.ifname, l.ifindex]));
}

export function writeResult(name: string, text: string): string {
  const f = resolve(RESULTS_DIR, name);
  mkdirSync(dirname(f), { recursive: true });
  writeFileSync(f, text);
  return f;
}

/** `--name value` options of the scripts (numbers and comma lists). */
export function option(argv: readonly string[], name: string): string | undefined {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1] : undefined;
}

export function mdTable(head: readonly string[], rows: readonly (readonly string[])[]): string {
  return [`| ${head.join(' | ')} |`, `| ${head.map(() => '---').join(' | ')} |`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

let done: Promise<void> | undefined;
/** Throws once the script is stopping (a signal came): loops call it between steps. */
export function checkRunning(): void {
  if (done) throw new Error('stopping');
}

/**
 * Runs a script's main: the cleanup registry (namespaces, rulesets, scratch
 * files) runs once, on success, failure or SIGINT/SIGTERM/SIGHUP, and the
 * process exits only when it is done. Skips with the reason when not root.
 */
export function runScript(name: string, main: () => Promise<void>): void {
  if (process.getuid?.() !== 0) {
    console.log(`SKIP ${name}: needs root (network namespaces, nftables)`);
    return;
  }
  const finish = (code: number): void => {
    done ??= runCleanups();
    void done.finally(() => process.exit(code));
  };
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, () => finish(130));
  main().then(
    () => finish(0),
    (e: unknown) => {
      console.error(e instanceof Error ? (e.stack ?? e.message) : String(e));
      finish(1);
    },
  );
}
