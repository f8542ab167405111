// The IP-learning parameters of a binding, read as libvirt reads them
// (nwfilter-semantics.md section 6; docs/design/ip-learning.md 1.1):
//  - CTRL_IP_LEARNING: `any` (the default when unset), `dhcp` or `none`,
//    compared case-insensitively; any other value is an error, which libvirt
//    reports only when it would learn (`$IP` referenced without a value);
//  - DHCPSERVER: the trusted DHCP servers of `dhcp` (IPv4 addresses). Under
//    `dhcp` each must be an IPv4 address. Other modes keep the values as
//    given: allow-dhcpv6-server reads IPv6 servers from DHCPSERVER.
// Only the first value of CTRL_IP_LEARNING counts, as in libvirt.
import { CODES, NwfError, type SourceLocation } from '../util/errors.js';
import { formatIPv4, parseIPv4 } from '../ir/values.js';

export type IpLearningMode = 'any' | 'dhcp' | 'none';

export interface IpLearning {
  mode: IpLearningMode;
  /** The trusted DHCP servers (DHCPSERVER), in order, without repeats; empty: not given. Dotted quads under `dhcp`. */
  dhcpServers: string[];
}

export const IP_LEARNING_VAR = 'CTRL_IP_LEARNING';
export const DHCP_SERVER_VAR = 'DHCPSERVER';
export const DEFAULT_IP_LEARNING: IpLearningMode = 'any';

/** Where the parameters come from, for the error. */
export interface LearningContext {
  iface: string;
  filter: string;
  loc: SourceLocation;
}

/** The learning mode named by a CTRL_IP_LEARNING value, case-insensitively; undefined for anything else. */
export function learningModeOf(value: string): IpLearningMode | undefined {
  const v = value.toLowerCase();
  return v === 'any' || v === 'dhcp' || v === 'none' ? v : undefined;
}

/**
 * The learning parameters of an interface from its top-level parameters.
 * Throws NWF1215 (IP_LEARNING_INVALID) for a CTRL_IP_LEARNING value other
 * than any, dhcp or none, and under `dhcp` for a DHCPSERVER that is not an
 * IPv4 address.
 */
export function parseIpLearning(params: ReadonlyMap<string, readonly string[]>, ctx: LearningContext): IpLearning {
  const mode = parseLearningMode(params.get(IP_LEARNING_VAR)?.[0], ctx);
  const servers: string[] = [];
  for (const s of params.get(DHCP_SERVER_VAR) ?? []) {
    let v = s;
    if (mode === 'dhcp') {
      const n = parseIPv4(s);
      if (n === undefined) {
        throw new NwfError(CODES.IP_LEARNING_INVALID, `${DHCP_SERVER_VAR} value '${s}' is not an IPv4 address, and ${IP_LEARNING_VAR}=dhcp trusts DHCP servers by IPv4 address`, {
          location: ctx.loc,
          filter: ctx.filter,
          iface: ctx.iface,
          expected: 'an IPv4 address like 10.0.0.1',
        });
      }
      v = formatIPv4(n);
    }
    if (!servers.includes(v)) servers.push(v);
  }
  return { mode, dhcpServers: servers };
}

/** The mode of a CTRL_IP_LEARNING value (the first one; undefined: unset, the default); NWF1215 for an invalid one. */
export function parseLearningMode(raw: string | undefined, ctx: LearningContext): IpLearningMode {
  const mode = raw === undefined ? DEFAULT_IP_LEARNING : learningModeOf(raw);
  if (!mode) {
    throw new NwfError(CODES.IP_LEARNING_INVALID, `filter '${ctx.filter}': ${IP_LEARNING_VAR} has the invalid value '${raw}'`, {
      location: ctx.loc,
      filter: ctx.filter,
      iface: ctx.iface,
      expected: 'any, dhcp or none (any case)',
      hint: `fix <parameter name='${IP_LEARNING_VAR}' .../> in the interface's filterref, or give the address as <parameter name='IP' value='...'/>`,
    });
  }
  return mode;
}
