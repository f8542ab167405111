// A small, strict command-line parser: declared options only, clear errors.
import { CODES, NwfError } from '../util/errors.js';

export interface OptionSpec {
  /** Takes a value (`--out DIR`) or is a flag (`--json`). */
  value: boolean;
  repeatable?: boolean;
  help: string;
  /** Placeholder shown in help, e.g. DIR. */
  arg?: string;
}

export interface ParsedArgs {
  options: Map<string, string[]>;
  flags: Set<string>;
  positionals: string[];
}

export function parseArgs(argv: readonly string[], spec: Readonly<Record<string, OptionSpec>>, maxPositionals = 0): ParsedArgs {
  const out: ParsedArgs = { options: new Map(), flags: new Set(), positionals: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a === '--') {
      out.positionals.push(...argv.slice(i + 1));
      break;
    }
    if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      const name = eq > 0 ? a.slice(2, eq) : a.slice(2);
      const s = spec[name];
      if (!s) throw new NwfError(CODES.USAGE, `unknown option --${name}`, { hint: 'see --help' });
      if (!s.value) {
        if (eq > 0) throw new NwfError(CODES.USAGE, `option --${name} takes no value`);
        out.flags.add(name);
        continue;
      }
      const v = eq > 0 ? a.slice(eq + 1) : argv[++i];
      if (v === undefined) throw new NwfError(CODES.USAGE, `option --${name} needs a value (${s.arg ?? 'VALUE'})`);
      const list = out.options.get(name) ?? [];
      if (list.length && !s.repeatable) throw new NwfError(CODES.USAGE, `option --${name} given twice`);
      list.push(v);
      out.options.set(name, list);
      continue;
    }
    if (a.startsWith('-') && a !== '-') throw new NwfError(CODES.USAGE, `unknown option ${a}`, { hint: 'see --help' });
    out.positionals.push(a);
  }
  if (out.positionals.length > maxPositionals) {
    throw new NwfError(CODES.USAGE, `unexpected argument '${out.positionals[maxPositionals]}'`, { hint: 'see --help' });
  }
  return out;
}

export function formatHelp(usage: string, description: string, spec: Readonly<Record<string, OptionSpec>>): string {
  const lines = [`usage: ${usage}`, '', description, '', 'options:'];
  const rows = Object.entries(spec).map(([name, s]) => [`  --${name}${s.value ? ` ${s.arg ?? 'VALUE'}` : ''}`, s.help + (s.repeatable ? ' (repeatable)' : '')] as const);
  const w = Math.max(...rows.map((r) => r[0].length)) + 2;
  for (const [l, r] of rows) lines.push(l.padEnd(w) + r);
  return lines.join('\n') + '\n';
}

export function one(p: ParsedArgs, name: string): string | undefined {
  return p.options.get(name)?.[0];
}
export function many(p: ParsedArgs, name: string): string[] {
  return p.options.get(name) ?? [];
}
