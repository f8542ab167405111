// What the numbers were measured on: machine, kernel and tool versions.
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { cmd } from './util.js';

export interface Environment {
  hostname: string;
  cpuModel: string;
  cpus: number;
  memGiB: number;
  kernel: string;
  os: string;
  tools: Record<string, string>;
  /** Load average at the start (other work on the machine disturbs the numbers). */
  loadavg: number[];
}

async function version(argv: string[], re?: RegExp): Promise<string> {
  try {
    const r = await cmd(argv, { check: false, timeoutMs: 10_000 });
    const text = `${r.stdout}\n${r.stderr}`.trim();
    if (r.exitCode !== 0 && !text) return 'unavailable';
    const line = re ? (re.exec(text)?.[1] ?? text.split('\n')[0]) : text.split('\n')[0];
    return (line ?? '').trim() || 'unavailable';
  } catch {
    return 'unavailable';
  }
}

async function dpkg(pkg: string): Promise<string> {
  const r = await cmd(['dpkg-query', '-W', '-f=${Version}', pkg], { check: false, timeoutMs: 10_000 }).catch(() => undefined);
  return r && r.exitCode === 0 && r.stdout.trim() ? r.stdout.trim() : 'not installed';
}

export async function environment(): Promise<Environment> {
  let osName = 'unknown';
  try {
    osName = /^PRETTY_NAME="?([^"\n]*)"?$/m.exec(readFileSync('/etc/os-release', 'utf8'))?.[1] ?? 'unknown';
  } catch {
    /* keep unknown */
  }
  const tools: Record<string, string> = {
    node: process.version,
    nft: await version(['nft', '--version']),
    libnftables: await dpkg('libnftables1'),
    ebtables: await version(['ebtables', '--version']),
    libvirt: await version(['/usr/sbin/libvirtd', '--version']),
    virsh: await version(['virsh', '--version']),
    clang: await version(['clang-19', '--version']),
    libbpf: await dpkg('libbpf1'),
    trafgen: await version(['trafgen', '--version']),
    iproute2: await version(['ip', '-V']),
    tinybench: (JSON.parse(readFileSync(new URL('../../node_modules/tinybench/package.json', import.meta.url), 'utf8')) as { version: string }).version,
  };
  return {
    hostname: os.hostname(),
    cpuModel: os.cpus()[0]?.model ?? 'unknown',
    cpus: os.cpus().length,
    memGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    kernel: `${os.type()} ${os.release()} ${os.machine()}`,
    os: osName,
    tools,
    loadavg: os.loadavg().map((x) => Math.round(x * 100) / 100),
  };
}
