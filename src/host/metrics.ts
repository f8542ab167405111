// Prometheus text exposition format (version 0.0.4) of a status, for
// node_exporter's textfile collector: HELP and TYPE for every metric,
// counters end in _total, label values escaped. Written by `nwf-fast
// metrics --out FILE` atomically (a temp file in the same directory, then a
// rename), so the collector never reads half a file.
import type { Status } from './status.js';

const escapeLabel = (v: string): string => v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');

type Labels = Record<string, string>;

class Exposition {
  private lines: string[] = [];
  family(name: string, type: 'counter' | 'gauge', help: string, samples: readonly [Labels, number][]): void {
    this.lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [labels, value] of samples) {
      const l = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabel(v)}"`);
      this.lines.push(`${name}${l.length ? `{${l.join(',')}}` : ''} ${Number.isFinite(value) ? String(value) : 'NaN'}`);
    }
  }
  text(): string {
    return this.lines.join('\n') + '\n';
  }
}

export const HEALTH_STATES: readonly Status['health'][] = ['healthy', 'not-loaded', 'drift', 'unprotected', 'unverified', 'interrupted', 'failed-after-apply', 'no-access', 'state-damaged'];

/** The metrics of one status. */
export function metricsText(s: Status): string {
  const x = new Exposition();
  const drops: [Labels, number][] = [];
  for (const i of s.interfaces) {
    for (const [reason, n] of Object.entries(i.drops)) drops.push([{ interface: i.iface, domain: i.owner, reason, backend: 'nft' }, n]);
    for (const [reason, n] of Object.entries(i.bpfDrops ?? {})) drops.push([{ interface: i.iface, domain: i.owner, reason, backend: 'bpf' }, n]);
  }
  x.family('nwf_fast_drops_total', 'counter', 'Frames dropped by nwf-fast, by interface, domain (libvirt owner), drop reason and backend (nft, bpf).', drops);
  x.family('nwf_fast_protected_interfaces', 'gauge', 'Interfaces the loaded generation protects.', [[{}, s.interfaces.length]]);
  x.family('nwf_fast_unprotected_ports', 'gauge', "VM ports present on this host that no rules enforce now (of the loaded generation without nwf-fast's rules in force, or on a managed bridge with neither nwf-fast's nor libvirt's).", [[{}, s.unprotected.length]]);
  x.family('nwf_fast_drift', 'gauge', 'The kernel differs from what was recorded when the generation was loaded (1), or not (0).', [[{}, s.drift ? 1 : 0]]);
  x.family('nwf_fast_healthy', 'gauge', 'nwf-fast status says healthy: loaded, verified, no drift (1), or not (0).', [[{}, s.health === 'healthy' ? 1 : 0]]);
  x.family(
    'nwf_fast_health',
    'gauge',
    'The health nwf-fast status reports: 1 for the current one, 0 for the others.',
    HEALTH_STATES.map((h) => [{ state: h }, s.health === h ? 1 : 0]),
  );
  const at = s.loadedAt ? Date.parse(s.loadedAt) / 1000 : NaN;
  x.family('nwf_fast_last_load_timestamp_seconds', 'gauge', 'When the loaded generation was loaded (Unix time; absent when nothing is loaded).', Number.isFinite(at) ? [[{}, at]] : []);
  x.family('nwf_fast_generation_info', 'gauge', 'The loaded generation (label generation) and its backend; 1 while loaded.', s.current ? [[{ generation: s.current, backend: s.backend ?? 'unknown' }, 1]] : []);
  return x.text();
}
