// Command-line parsing: node:util parseArgs splits the arguments into tokens
// (long and short options, `--opt=value`, grouped short flags, the `--`
// terminator); the pass below holds them to the command's declared options,
// strictly: an unknown option, a missing value, a value that looks like an
// option, a value given to a flag, a non-repeatable option given twice and an
// unexpected positional are usage errors (NWF1301, exit 2). parseArgs' own
// strict mode is not used because it accepts repeated options silently and its
// messages cannot name the value's placeholder.
import { parseArgs as tokenize } from 'node:util';
import { CODES, NwfError } from '../util/errors.js';
import type { CliIo } from './io.js';

export interface OptionSpec {
  /** Takes a value (`--out DIR`) or is a flag (`--json`). */
  value: boolean;
  repeatable?: boolean;
  help: string;
  /** Placeholder shown in help, e.g. DIR. */
  arg?: string;
  /** One-letter alias, e.g. `h` for `-h`. */
  short?: string;
}

export type OptionSpecs = Readonly<Record<string, OptionSpec>>;

/** What every command accepts; handled by main.ts before the command runs. */
export const COMMON_OPTIONS: OptionSpecs = {
  help: { value: false, short: 'h', help: 'show this help and exit' },
  version: { value: false, help: 'print the version and exit' },
};

export interface ParsedArgs {
  options: Map<string, string[]>;
  flags: Set<string>;
  positionals: string[];
}

/** One subcommand: its help text is generated from this, so usage lines list every option. */
export interface Command {
  name: string;
  /** One line for `nwf-fast --help`. */
  summary: string;
  description: string;
  /** The command's own options (COMMON_OPTIONS are added to every command). */
  options: OptionSpecs;
  /** Positional arguments as the usage line shows them (e.g. `[DIR]`) and how many are allowed. */
  positionals?: { usage: string; max: number };
  /** Options the command requires: shown without brackets in the usage line (the command checks them). */
  required?: readonly string[];
  run(p: ParsedArgs, io: CliIo): Promise<number>;
}

function usageError(command: string, message: string, expected?: string): NwfError {
  return new NwfError(CODES.USAGE, message, { ...(expected ? { expected } : {}), hint: command ? `nwf-fast help ${command}` : 'nwf-fast --help' });
}

/** The command's options, common ones included. */
export function allOptions(c: Pick<Command, 'options'>): OptionSpecs {
  return { ...c.options, ...COMMON_OPTIONS };
}

export function parseArgs(argv: readonly string[], c: Pick<Command, 'name' | 'options' | 'positionals'>): ParsedArgs {
  const spec = allOptions(c);
  const options = Object.fromEntries(
    Object.entries(spec).map(([name, s]) => [name, { type: s.value ? ('string' as const) : ('boolean' as const), ...(s.short ? { short: s.short } : {}) }]),
  );
  const { tokens } = tokenize({ args: [...argv], options, strict: false, allowPositionals: true, tokens: true });
  const out: ParsedArgs = { options: new Map(), flags: new Set(), positionals: [] };
  for (const t of tokens) {
    if (t.kind === 'option-terminator') continue;
    if (t.kind === 'positional') {
      out.positionals.push(t.value);
      continue;
    }
    const s = Object.hasOwn(spec, t.name) ? spec[t.name] : undefined;
    if (!s) throw usageError(c.name, `unknown option ${t.rawName}`, `one of ${Object.keys(spec).map((n) => `--${n}`).join(', ')}`);
    const shown = `--${t.name}`;
    if (!s.value) {
      if (t.value !== undefined) throw usageError(c.name, `option ${shown} takes no value (given '${t.value}')`);
      if (out.flags.has(t.name)) throw usageError(c.name, `option ${shown} given twice`);
      out.flags.add(t.name);
      continue;
    }
    const placeholder = s.arg ?? 'VALUE';
    if (t.value === undefined) throw usageError(c.name, `option ${shown} needs a value (${placeholder})`);
    // `--out --json`: the next word is taken as the value only if it does not look like an option.
    if (!t.inlineValue && t.value.startsWith('-') && t.value !== '-') {
      throw usageError(c.name, `option ${shown} needs a value (${placeholder}), and '${t.value}' looks like an option`, `${shown} ${placeholder}; a value that starts with '-' as ${shown}=${t.value}`);
    }
    const list = out.options.get(t.name) ?? [];
    if (list.length && !s.repeatable) throw usageError(c.name, `option ${shown} given twice (it takes one ${placeholder})`);
    list.push(t.value);
    out.options.set(t.name, list);
  }
  const max = c.positionals?.max ?? 0;
  if (out.positionals.length > max) {
    const takes = max === 0 ? 'takes no arguments' : `takes at most ${max === 1 ? 'one argument' : `${max} arguments`}: ${c.positionals?.usage}`;
    throw usageError(c.name, `unexpected argument '${out.positionals[max]}' (nwf-fast${c.name ? ` ${c.name}` : ''} ${takes})`);
  }
  return out;
}

const WIDTH = 80;

/** Joins `words` after `head` in lines of at most WIDTH columns; continuation lines start at column `indent`. */
export function wrap(head: string, words: readonly string[], indent: number, sep = ' '): string {
  const lines = [head];
  for (const w of words) {
    const last = lines[lines.length - 1] as string;
    const fresh = last.length <= indent;
    if (!fresh && last.length + sep.length + w.length > WIDTH) lines.push(' '.repeat(indent) + w);
    else lines[lines.length - 1] = fresh ? last.padEnd(indent) + w : last + sep + w;
  }
  return lines.join('\n');
}

/** `usage: nwf-fast load [DIR] [--state-dir DIR] ... [-h|--help] [--version]`, wrapped under the command. */
export function usageLine(c: Pick<Command, 'name' | 'options' | 'positionals' | 'required'>): string {
  const words: string[] = [];
  if (c.positionals) words.push(c.positionals.usage);
  for (const [name, s] of Object.entries(allOptions(c))) {
    const flag = s.short ? `-${s.short}|--${name}` : `--${name}`;
    const w = s.value ? `${flag} ${s.arg ?? 'VALUE'}` : flag;
    words.push(c.required?.includes(name) ? w : `[${w}]${s.repeatable ? '...' : ''}`);
  }
  const head = `usage: nwf-fast ${c.name}`;
  return wrap(head, words, head.length + 1);
}

export function formatHelp(c: Omit<Command, 'run'>): string {
  const lines = [usageLine(c), '', c.description, '', 'options:'];
  const rows = Object.entries(allOptions(c)).map(
    ([name, s]) => [`  ${s.short ? `-${s.short}, ` : '    '}--${name}${s.value ? ` ${s.arg ?? 'VALUE'}` : ''}`, s.help + (s.repeatable ? ' (repeatable)' : '')] as const,
  );
  const w = Math.min(Math.max(...rows.map((r) => r[0].length)) + 2, 36);
  for (const [l, r] of rows) {
    const long = l.length + 2 > w;
    if (long) lines.push(l);
    lines.push(wrap(long ? '' : l, r.split(' '), w));
  }
  return lines.join('\n') + '\n';
}

export function one(p: ParsedArgs, name: string): string | undefined {
  return p.options.get(name)?.[0];
}
export function many(p: ParsedArgs, name: string): string[] {
  return p.options.get(name) ?? [];
}
