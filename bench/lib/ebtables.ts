// libvirt's ebtables rules for many ports, cheaply: real libvirt instantiates
// clean-traffic on a few ports, `ebtables-save` captures them, and the rules
// of vnet0 are rewritten (tap name, MAC, IP) for every port; the result goes
// in with one `ebtables-restore`. The rules are libvirt's own, byte for byte,
// apart from those three values.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { portIp, portMac, portName } from './policy.js';

export interface EbtablesTemplate {
  /** `:CHAIN POLICY` lines of vnet0's user chains. */
  chains: string[];
  /** `-A PREROUTING ... vnet0 ...` / `-A POSTROUTING ...` jump lines. */
  pre: string[];
  post: string[];
  /** Rules of vnet0's user chains, in order. */
  rules: string[];
  /** Where it came from: 'libvirt <version> (this run)' or the cached file. */
  source: string;
  /** The ebtables-save text it was cut from. */
  saved: string;
}

const PORT0 = /vnet0(?![0-9])/g;

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Cuts vnet0's chains and rules out of ebtables-save output (nat table). */
export function templateFromSave(saved: string, source: string): EbtablesTemplate {
  const t: EbtablesTemplate = { chains: [], pre: [], post: [], rules: [], source, saved };
  let table = '';
  for (const line of saved.split('\n')) {
    if (line.startsWith('*')) table = line.slice(1).trim();
    if (table !== 'nat' || !/vnet0(?![0-9])/.test(line)) continue;
    if (line.startsWith(':')) t.chains.push(line);
    else if (line.startsWith('-A PREROUTING ')) t.pre.push(line);
    else if (line.startsWith('-A POSTROUTING ')) t.post.push(line);
    else if (line.startsWith('-A ')) t.rules.push(line);
  }
  if (!t.chains.length || !t.pre.length || !t.rules.length) throw new Error(`ebtables-save output has no rules for vnet0 in table nat:\n${saved.slice(0, 2000)}`);
  return t;
}

function forPort(line: string, i: number): string {
  const mac0 = new RegExp(escapeRe(portMac(0)), 'gi');
  const ip0 = new RegExp(`${escapeRe(portIp(0))}(?![0-9])`, 'g');
  return line.replace(PORT0, portName(i)).replace(mac0, portMac(i)).replace(ip0, portIp(i));
}

/**
 * ebtables-restore input protecting vnet0..vnet{n-1}. libvirt appends each
 * new port's PREROUTING/POSTROUTING jump, so a port's position is its start
 * order; `senderAt` puts vnet0's jumps at that position (the middle of the
 * list: an average VM).
 */
export function replicate(t: EbtablesTemplate, n: number, senderAt: number): string {
  const order = Array.from({ length: n }, (_, i) => i).filter((i) => i !== 0);
  order.splice(Math.min(Math.max(0, senderAt), order.length), 0, 0);
  const out: string[] = ['*nat', ':PREROUTING ACCEPT', ':OUTPUT ACCEPT', ':POSTROUTING ACCEPT'];
  for (let i = 0; i < n; i++) for (const c of t.chains) out.push(forPort(c, i));
  for (const i of order) for (const l of t.pre) out.push(forPort(l, i));
  for (const i of order) for (const l of t.post) out.push(forPort(l, i));
  for (let i = 0; i < n; i++) for (const r of t.rules) out.push(forPort(r, i));
  out.push('');
  return out.join('\n');
}

/** ebtables-restore --noflush input adding ports [from, to) to an existing nat table (jumps appended, as libvirt does). */
export function replicateRange(t: EbtablesTemplate, from: number, to: number): string {
  const out: string[] = ['*nat'];
  for (let i = from; i < to; i++) for (const c of t.chains) out.push(forPort(c, i));
  for (let i = from; i < to; i++) for (const l of t.pre) out.push(forPort(l, i));
  for (let i = from; i < to; i++) for (const l of t.post) out.push(forPort(l, i));
  for (let i = from; i < to; i++) for (const r of t.rules) out.push(forPort(r, i));
  out.push('');
  return out.join('\n');
}

export function saveTemplate(file: string, t: EbtablesTemplate): void {
  writeFileSync(file, `# source: ${t.source}\n${t.saved}`);
}

export function loadTemplate(file: string): EbtablesTemplate | undefined {
  if (!existsSync(file)) return undefined;
  const text = readFileSync(file, 'utf8');
  const source = /^# source: (.*)$/m.exec(text)?.[1] ?? 'unknown';
  return templateFromSave(text, `${source}; cached in ${file}`);
}
