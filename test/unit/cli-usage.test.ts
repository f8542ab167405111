// The command-line surface: help on every command (three ways), --version,
// usage lines that list every option, and strict parsing: every malformed
// command line is a usage error (NWF1301, exit 2, nothing on stdout).
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.js';
import { tempDir } from '../support/policy.js';

async function run(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await main(argv, { out: (s) => void (out += s), err: (s) => void (err += s) });
  return { code, out, err };
}

const PKG = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
const COMMANDS = ['compile', 'explain', 'load', 'rollback', 'status', 'unload', 'metrics', 'libvirt-hook', 'reconcile', 'takeover', 'handback', 'restore', 'install', 'adopt', 'forget', 'demo'];

/** The options a help text documents (its `options:` table). */
function documentedOptions(help: string): string[] {
  const table = help.slice(help.indexOf('\noptions:\n'));
  return [...table.matchAll(/^ {2}(?:-\w, | {4})(--[\w-]+)/gm)].map((m) => m[1] as string);
}

describe('help', () => {
  it.each(COMMANDS)('%s: `help %s`, `-h` and `--help` print the same help', async (c) => {
    const a = await run(['help', c]);
    const b = await run([c, '-h']);
    const d = await run([c, '--help']);
    for (const r of [a, b, d]) {
      expect(r.code).toBe(0);
      expect(r.err).toBe('');
    }
    expect(a.out).toMatch(new RegExp(`^usage: nwf-fast ${c}`));
    expect(b.out).toBe(a.out);
    expect(d.out).toBe(a.out);
  });

  it.each(COMMANDS)('%s: the usage line lists every documented option', async (c) => {
    const help = (await run(['help', c])).out;
    const usage = help.slice(0, help.indexOf('\n\n'));
    const options = documentedOptions(help);
    expect(options).toEqual(expect.arrayContaining(['--help', '--version']));
    for (const o of options) expect(usage).toMatch(new RegExp(`(^|[\\s\\[|])${o}([\\s\\]]|$)`));
  });

  it('the load help names every host option', async () => {
    const help = (await run(['load', '--help'])).out;
    expect(documentedOptions(help)).toEqual(['--state-dir', '--nft-binary', '--pin-dir', '--bpf-hook', '--tap-pattern', '--bridge', '--full', '--allow-empty', '--json', '--help', '--version']);
    expect(help).toMatch(/^usage: nwf-fast load \[DIR\] \[--state-dir DIR\] \[--nft-binary\] \[--pin-dir DIR\]/);
  });

  it('explain shows its required options without brackets', async () => {
    const usage = (await run(['explain', '-h'])).out.split('\n\n')[0] as string;
    expect(usage).toMatch(/\s--iface IF\s+--direction out\|in\s+--frame HEX\s/);
    expect(usage).toContain('[--filters DIR]...');
  });

  it('help lines stay within 80 columns', async () => {
    for (const argv of [['--help'], ...COMMANDS.map((c) => ['help', c])]) {
      for (const line of (await run(argv)).out.split('\n')) expect(line.length, `${argv.join(' ')}: ${line}`).toBeLessThanOrEqual(80);
    }
  });

  it('`nwf-fast --help` and `nwf-fast help` list every command', async () => {
    for (const argv of [['--help'], ['-h'], ['help']]) {
      const r = await run(argv);
      expect(r.code).toBe(0);
      for (const c of [...COMMANDS, 'help']) expect(r.out).toMatch(new RegExp(`^ {2}${c} +\\S`, 'm'));
    }
  });

  it('no command: the usage on stderr, exit 2', async () => {
    const r = await run([]);
    expect(r.code).toBe(2);
    expect(r.out).toBe('');
    expect(r.err).toContain('usage: nwf-fast COMMAND');
  });
});

describe('--version', () => {
  it.each([['--version'], ...COMMANDS.map((c) => [c, '--version'])])('%s prints the package version', async (...argv) => {
    const r = await run(argv);
    expect(r.code).toBe(0);
    expect(r.out).toBe(`nwf-fast ${PKG.version}\n`);
  });
});

describe('usage errors: NWF1301, exit 2, stdout empty, a message that names the problem', () => {
  const cases: { argv: string[]; message: RegExp; hint?: string }[] = [
    { argv: ['frobnicate'], message: /unknown command 'frobnicate'/, hint: 'nwf-fast --help' },
    { argv: ['help', 'frobnicate'], message: /unknown command 'frobnicate'/ },
    { argv: ['help', 'load', 'extra'], message: /unexpected argument 'extra'/ },
    { argv: ['--bogus'], message: /unknown option --bogus/ },
    { argv: ['--version', 'load'], message: /unexpected argument 'load'/ },
    { argv: ['compile', '--bogus'], message: /unknown option --bogus/, hint: 'nwf-fast help compile' },
    { argv: ['compile', '-x'], message: /unknown option -x/ },
    { argv: ['compile', '-hx'], message: /unknown option -x/ },
    { argv: ['compile', '--out'], message: /option --out needs a value \(DIR\)/ },
    { argv: ['compile', '--out', '--policy'], message: /option --out needs a value \(DIR\), and '--policy' looks like an option/ },
    { argv: ['compile', '--out', 'a', '--out', 'b'], message: /option --out given twice/ },
    { argv: ['compile', '--backend=nft', '--backend', 'bpf'], message: /option --backend given twice/ },
    { argv: ['compile', '--policy', '--policy'], message: /option --policy given twice/ },
    { argv: ['compile', '--policy=yes'], message: /option --policy takes no value/ },
    { argv: ['compile', 'extra'], message: /unexpected argument 'extra' \(nwf-fast compile takes no arguments\)/ },
    { argv: ['compile', '--', '--policy'], message: /unexpected argument '--policy'/ },
    { argv: ['explain', '--iface'], message: /option --iface needs a value \(IF\)/ },
    { argv: ['load', 'a', 'b'], message: /unexpected argument 'b' \(nwf-fast load takes at most one argument: \[DIR\]\)/ },
    { argv: ['load', '--state-dir'], message: /option --state-dir needs a value \(DIR\)/ },
    { argv: ['load', '--full', '--full'], message: /option --full given twice/ },
    { argv: ['rollback', 'x'], message: /unexpected argument 'x' \(nwf-fast rollback takes no arguments\)/ },
    { argv: ['status', '--json', '--pin-dir'], message: /option --pin-dir needs a value/ },
    { argv: ['unload', '--state-dir', 'a', '--state-dir', 'b'], message: /option --state-dir given twice/ },
    { argv: ['demo', '--full'], message: /unknown option --full/ },
  ];
  it.each(cases)('$argv', async (c) => {
    const r = await run(c.argv);
    expect(r.code).toBe(2);
    // with --json the error is also printed as JSON on stdout
    if (c.argv.includes('--json')) expect(JSON.parse(r.out)).toMatchObject({ version: 1, kind: 'error', error: { code: 'NWF1301', category: 'usage', exitCode: 2 } });
    else expect(r.out).toBe('');
    expect(r.err).toContain('error NWF1301');
    expect(r.err).toMatch(c.message);
    if (c.hint) expect(r.err).toContain(`hint: ${c.hint}`);
  });

  it('an error names the command it belongs to', async () => {
    expect((await run(['load', '--bogus'])).err).toMatch(/^nwf-fast load: error NWF1301/);
    expect((await run(['--bogus'])).err).toMatch(/^nwf-fast: error NWF1301/);
  });
});

describe('well-formed command lines', () => {
  const empty = tempDir({});
  it('repeatable options take every value; --opt=value and --opt value are the same', async () => {
    const other = tempDir({ 'g.xml': "<filter name='g' chain='root'/>" });
    const r = await run(['compile', '--no-bundled', `--filters=${empty}`, '--filters', other, '--policy']);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toBe('# no interfaces to protect\n');
  });
  it('an option value is checked by the command: --backend=bogus', async () => {
    const r = await run(['compile', '--no-bundled', '--backend=bogus']);
    expect(r.code).toBe(2);
    expect(r.err).toContain("unknown backend 'bogus'");
  });
  it('-h wins over the other arguments and runs nothing', async () => {
    const r = await run(['load', '/nonexistent', '--full', '-h']);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^usage: nwf-fast load/);
  });
});
