// The host configuration: /etc/nwf-fast/nwf-fast.conf, or the file named by
// NWF_FAST_CONFIG. `key = value` lines, `#` starts a comment (at the start of
// a line or after whitespace), blank lines are ignored. An unknown key, a
// repeated key or a bad value is an error naming file:line. A missing default
// file means the defaults; a file named by NWF_FAST_CONFIG must exist.
// NWF_FAST_STATE_DIR and NWF_FAST_PIN_DIR override the file for every
// command (so a libvirt hook can run against a test host).
import { readFileSync } from 'node:fs';
import { CODES, NwfError } from '../util/errors.js';
import { isValidIfName } from '../ir/values.js';

export const DEFAULT_CONFIG_FILE = '/etc/nwf-fast/nwf-fast.conf';

/** takeover: libvirt's nwfilter instantiates, nwf-fast takes its dispatch over; native: filters in domain metadata. */
export type Mode = 'takeover' | 'native';
export type ConfigBackend = 'nft' | 'bpf' | 'both';

export interface HostConfig {
  mode: Mode;
  backend: ConfigBackend;
  /** Bridges nwf-fast manages; empty: every bridge. */
  bridges: string[];
  /** Globs (`*`, `?`, `[...]`) of the tap names nwf-fast protects. */
  tapPatterns: string[];
  stateDir: string;
  pinDir: string;
  keepGenerations: number;
  /** Seconds a state-changing command waits for the lock. */
  lockTimeoutS: number;
  /**
   * Seconds a dhcp lease learned by the nft packet path lasts from its
   * latest DHCPACK (nft cannot read the lease time, option 51).
   */
  dhcpKernelLeaseS: number;
  libvirtUri: string;
  /** Where eBPF programs go on the taps (load --bpf-hook); unset: the last load's choice, else auto. */
  bpfHook?: 'auto' | 'tc' | 'tcx' | 'xdp';
  /** Where the configuration came from (undefined: defaults, no file). */
  file?: string;
}

export const DEFAULT_CONFIG: Readonly<HostConfig> = Object.freeze({
  mode: 'takeover',
  backend: 'nft',
  bridges: [],
  tapPatterns: ['vnet*'],
  stateDir: '/var/lib/nwf-fast',
  pinDir: '/sys/fs/bpf/nwf-fast',
  keepGenerations: 10,
  lockTimeoutS: 30,
  dhcpKernelLeaseS: 3600,
  libvirtUri: 'qemu:///system',
});

type Setter = (c: HostConfig, value: string, fail: (expected: string) => never) => void;

const oneOf =
  <T extends string>(key: keyof HostConfig, allowed: readonly T[]): Setter =>
  (c, v, fail) => {
    if (!(allowed as readonly string[]).includes(v)) fail(allowed.join(' | '));
    (c as unknown as Record<string, unknown>)[key] = v;
  };

const absPath =
  (key: 'stateDir' | 'pinDir'): Setter =>
  (c, v, fail) => {
    if (!v.startsWith('/') || v.split('/').includes('..')) fail('an absolute path without ..');
    c[key] = v.length > 1 ? v.replace(/\/+$/, '') : v;
  };

const integer =
  (key: 'keepGenerations' | 'lockTimeoutS' | 'dhcpKernelLeaseS', min: number, max: number): Setter =>
  (c, v, fail) => {
    if (!/^\d+$/.test(v) || Number(v) < min || Number(v) > max) fail(`an integer from ${min} to ${max}`);
    c[key] = Number(v);
  };

const GLOB_RE = /^[A-Za-z0-9_.@+\-*?[\]!]{1,15}$/;

/** Every key of the file, in the order the README lists them. */
const KEYS: Readonly<Record<string, Setter>> = {
  mode: oneOf('mode', ['takeover', 'native'] as const),
  backend: oneOf('backend', ['nft', 'bpf', 'both'] as const),
  bridges: (c, v, fail) => {
    const names = v.split(/\s+/).filter(Boolean);
    if (!names.every(isValidIfName)) fail('space-separated interface names (empty: every bridge)');
    c.bridges = names;
  },
  tap_patterns: (c, v, fail) => {
    const pats = v.split(/\s+/).filter(Boolean);
    if (!pats.length || !pats.every((p) => GLOB_RE.test(p))) fail('space-separated globs of interface names, e.g. vnet* tap*');
    c.tapPatterns = pats;
  },
  state_dir: absPath('stateDir'),
  pin_dir: absPath('pinDir'),
  keep_generations: integer('keepGenerations', 1, 1000),
  lock_timeout: integer('lockTimeoutS', 1, 3600),
  dhcp_kernel_lease: integer('dhcpKernelLeaseS', 1, 31536000),
  bpf_hook: oneOf('bpfHook', ['auto', 'tc', 'tcx', 'xdp'] as const),
  libvirt_uri: (c, v, fail) => {
    if (!/^[a-z][a-z0-9+]*:\/\/\S*$/.test(v)) fail('a libvirt URI like qemu:///system');
    c.libvirtUri = v;
  },
};

export const CONFIG_KEYS: readonly string[] = Object.keys(KEYS);

/** Parses configuration text (file is for messages). */
export function parseConfig(text: string, file: string): HostConfig {
  const c: HostConfig = { ...DEFAULT_CONFIG, bridges: [], tapPatterns: [...DEFAULT_CONFIG.tapPatterns], file };
  const seen = new Map<string, number>();
  text.split('\n').forEach((raw, i) => {
    const line = i + 1;
    const at = { location: { file, line } };
    const content = raw.replace(/(^|\s)#.*$/, '').trim();
    if (!content) return;
    const eq = content.indexOf('=');
    if (eq < 0) throw new NwfError(CODES.CONFIG_INVALID, `not a 'key = value' line: ${JSON.stringify(raw.trim())}`, { ...at, expected: `key = value, with a key among ${CONFIG_KEYS.join(', ')}` });
    const key = content.slice(0, eq).trim();
    const value = content.slice(eq + 1).trim();
    const set = Object.hasOwn(KEYS, key) ? KEYS[key] : undefined;
    if (!set) throw new NwfError(CODES.CONFIG_INVALID, `unknown key '${key}'`, { ...at, expected: `one of ${CONFIG_KEYS.join(', ')}` });
    const first = seen.get(key);
    if (first !== undefined) throw new NwfError(CODES.CONFIG_INVALID, `key '${key}' given twice (first at line ${first})`, at);
    seen.set(key, line);
    set(c, value, (expected) => {
      throw new NwfError(CODES.CONFIG_INVALID, `invalid value ${JSON.stringify(value)} for '${key}'`, { ...at, expected });
    });
  });
  return c;
}

/**
 * The configuration in force: the file named by NWF_FAST_CONFIG (which must
 * exist), else the default file if it exists, else the defaults; then
 * NWF_FAST_STATE_DIR and NWF_FAST_PIN_DIR on top.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): HostConfig {
  const named = env.NWF_FAST_CONFIG;
  const file = named || DEFAULT_CONFIG_FILE;
  let text: string | undefined;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (named || code !== 'ENOENT') {
      throw new NwfError(CODES.CONFIG_INVALID, `cannot read the configuration ${file}: ${code ?? (e as Error).message}`, {
        location: { file },
        ...(named ? { hint: 'NWF_FAST_CONFIG names a file that must exist; unset it to use the defaults' } : {}),
        cause: e,
      });
    }
  }
  const c = text === undefined ? { ...DEFAULT_CONFIG, bridges: [], tapPatterns: [...DEFAULT_CONFIG.tapPatterns] } : parseConfig(text, file);
  const fromEnv: [string | undefined, 'stateDir' | 'pinDir', string][] = [
    [env.NWF_FAST_STATE_DIR, 'stateDir', 'NWF_FAST_STATE_DIR'],
    [env.NWF_FAST_PIN_DIR, 'pinDir', 'NWF_FAST_PIN_DIR'],
  ];
  for (const [v, key, name] of fromEnv) {
    if (!v) continue;
    absPath(key)(c, v, (expected) => {
      throw new NwfError(CODES.CONFIG_INVALID, `invalid ${name} ${JSON.stringify(v)}`, { expected });
    });
  }
  return c;
}

/** Whether name matches a glob of tap_patterns (`*`, `?`, `[abc]`, `[a-z]`, `[!a]`). */
export function globMatch(glob: string, name: string): boolean {
  let re = '^';
  for (let i = 0; i < glob.length; i++) {
    const ch = glob[i] as string;
    if (ch === '*') re += '.*';
    else if (ch === '?') re += '.';
    else if (ch === '[') {
      const end = glob.indexOf(']', i + 2);
      if (end < 0) {
        re += '\\[';
        continue;
      }
      let body = glob.slice(i + 1, end);
      if (body.startsWith('!')) body = `^${body.slice(1)}`;
      re += `[${body.replace(/\\/g, '\\\\')}]`;
      i = end;
    } else re += ch.replace(/[.+^$(){}|\\]/g, '\\$&');
  }
  return new RegExp(`${re}$`).test(name);
}

/** Whether a port name matches the configured tap patterns. */
export function isTapName(c: Pick<HostConfig, 'tapPatterns'>, name: string): boolean {
  return c.tapPatterns.some((p) => globMatch(p, name));
}

/** Whether nwf-fast manages a bridge (every bridge when none is configured). */
export function isManagedBridge(c: Pick<HostConfig, 'bridges'>, bridge: string): boolean {
  return c.bridges.length === 0 || c.bridges.includes(bridge);
}

/** The default configuration file's text, as `nwf-fast install` writes it. */
export function defaultConfigText(): string {
  const d = DEFAULT_CONFIG;
  return [
    '# nwf-fast host configuration (README: Running on a KVM host).',
    '# `key = value`; unknown keys are an error. Values shown are the defaults.',
    '',
    '# takeover: libvirt instantiates its nwfilter rules, nwf-fast replaces their dispatch',
    '# native: filters live in the domain <metadata> (nwf-fast adopt), libvirt does not filter',
    `mode = ${d.mode}`,
    '# nft | bpf | both',
    `backend = ${d.backend}`,
    '# bridges nwf-fast manages, space-separated (empty: every bridge)',
    'bridges =',
    '# names of the VM ports (globs)',
    `tap_patterns = ${d.tapPatterns.join(' ')}`,
    `state_dir = ${d.stateDir}`,
    `pin_dir = ${d.pinDir}`,
    `keep_generations = ${d.keepGenerations}`,
    '# seconds a command waits for another one holding the state lock',
    `lock_timeout = ${d.lockTimeoutS}`,
    '# CTRL_IP_LEARNING=dhcp under the nft backend: seconds a lease lasts after its latest DHCPACK',
    '# (nft cannot read the lease time; clients renew at half their lease: keep it above that)',
    `dhcp_kernel_lease = ${d.dhcpKernelLeaseS}`,
    `libvirt_uri = ${d.libvirtUri}`,
    '# where eBPF programs go on the taps: auto (tc) | tc | tcx | xdp; unset: the last load\'s --bpf-hook',
    '# bpf_hook = auto',
    '',
  ].join('\n');
}
