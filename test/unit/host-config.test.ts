// The host configuration file: keys, defaults, errors with file:line, and the
// environment overrides the libvirt hook relies on.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG, defaultConfigText, globMatch, isManagedBridge, isTapName, loadConfig, parseConfig } from '../../src/host/config.js';
import { nwfErrorOf as error } from '../support/cli.js';

function file(text: string): string {
  const d = mkdtempSync(join(tmpdir(), 'nwf-conf-'));
  const f = join(d, 'nwf-fast.conf');
  writeFileSync(f, text);
  return f;
}

describe('parseConfig', () => {
  it('reads every key, with comments and blank lines', () => {
    const c = parseConfig(
      [
        '# a comment',
        '',
        'mode = native',
        'backend=both   # trailing comment',
        'bridges = br0 br1',
        'tap_patterns = vnet* tap?x',
        'state_dir = /srv/nwf/',
        'pin_dir = /sys/fs/bpf/x',
        'keep_generations = 3',
        'lock_timeout = 5',
        'libvirt_uri = qemu+ssh://h/system',
        'bpf_hook = xdp',
      ].join('\n'),
      'f.conf',
    );
    expect(c).toMatchObject({ mode: 'native', backend: 'both', bridges: ['br0', 'br1'], tapPatterns: ['vnet*', 'tap?x'], stateDir: '/srv/nwf', pinDir: '/sys/fs/bpf/x', keepGenerations: 3, lockTimeoutS: 5, libvirtUri: 'qemu+ssh://h/system', bpfHook: 'xdp', file: 'f.conf' });
  });

  it('the default file text parses to the defaults', () => {
    const { file: _f, ...c } = parseConfig(defaultConfigText(), 'x');
    expect(c).toEqual({ ...DEFAULT_CONFIG });
  });

  it.each([
    ['colour = blue', 2, /unknown key 'colour'/, /one of mode, backend, bridges/],
    ['mode = both', 2, /invalid value "both" for 'mode'/, /takeover \| native/],
    ['bpf_hook = tcp', 2, /invalid value "tcp" for 'bpf_hook'/, /auto \| tc \| tcx \| xdp/],
    ['lock_timeout = 0', 2, /invalid value "0" for 'lock_timeout'/, /integer from 1 to 3600/],
    ['state_dir = var/lib', 2, /invalid value/, /absolute path/],
    ['state_dir = /a/../b', 2, /invalid value/, /absolute path/],
    ['tap_patterns = vnet;*', 2, /invalid value/, /globs/],
    ['tap_patterns =', 2, /invalid value/, /globs/],
    ['bridges = br0 b/r', 2, /invalid value/, /interface names/],
    ['just words', 2, /not a 'key = value' line/, /key = value/],
    ['mode = native\nmode = takeover', 3, /given twice \(first at line 2\)/, undefined],
  ])('%s: an error at file:line', (text, line, message, expected) => {
    const e = error(() => parseConfig(`# header\n${text}`, '/etc/nwf-fast/nwf-fast.conf'));
    expect(e.code).toBe('NWF1501');
    expect(e.details.location).toEqual({ file: '/etc/nwf-fast/nwf-fast.conf', line });
    expect(e.message).toMatch(message);
    if (expected) expect(e.details.expected).toMatch(expected);
    expect(e.format()).toMatch(new RegExp(`^/etc/nwf-fast/nwf-fast.conf:${line}: error NWF1501`));
  });
});

describe('loadConfig', () => {
  it('NWF_FAST_CONFIG names the file; NWF_FAST_STATE_DIR and NWF_FAST_PIN_DIR override it', () => {
    const f = file('state_dir = /srv/a\npin_dir = /sys/fs/bpf/a\nmode = native\n');
    expect(loadConfig({ NWF_FAST_CONFIG: f })).toMatchObject({ stateDir: '/srv/a', pinDir: '/sys/fs/bpf/a', mode: 'native', file: f });
    expect(loadConfig({ NWF_FAST_CONFIG: f, NWF_FAST_STATE_DIR: '/tmp/s', NWF_FAST_PIN_DIR: '/sys/fs/bpf/t' })).toMatchObject({ stateDir: '/tmp/s', pinDir: '/sys/fs/bpf/t', mode: 'native' });
  });

  it('a named file that is missing is an error; so is a bad override', () => {
    expect(error(() => loadConfig({ NWF_FAST_CONFIG: '/nonexistent/nwf.conf' })).message).toMatch(/cannot read the configuration \/nonexistent\/nwf.conf: ENOENT/);
    expect(error(() => loadConfig({ NWF_FAST_CONFIG: file(''), NWF_FAST_STATE_DIR: 'relative' })).message).toMatch(/invalid NWF_FAST_STATE_DIR/);
  });
});

describe('tap patterns and bridges', () => {
  it.each([
    ['vnet*', 'vnet0', true],
    ['vnet*', 'vnet', true],
    ['vnet*', 'xvnet0', false],
    ['tap?', 'tap1', true],
    ['tap?', 'tap12', false],
    ['vnet[0-3]', 'vnet2', true],
    ['vnet[0-3]', 'vnet5', false],
    ['vnet[!0]', 'vnet0', false],
    ['v.t', 'vxt', false],
    ['v.t', 'v.t', true],
  ])('%s matches %s: %s', (glob, name, want) => {
    expect(globMatch(glob, name)).toBe(want);
  });

  it('an empty bridge list manages every bridge', () => {
    expect(isManagedBridge({ bridges: [] }, 'br7')).toBe(true);
    expect(isManagedBridge({ bridges: ['br0'] }, 'br7')).toBe(false);
    expect(isTapName({ tapPatterns: ['vnet*', 'macvtap*'] }, 'macvtap3')).toBe(true);
  });
});
