// IP learning: the shared types of the learned state (issue 10). A port
// whose policy references $IP without a value learns its address in the
// kernel (CTRL_IP_LEARNING any or dhcp); the learned addresses are state,
// keyed by the VM's identity (owner UUID and MAC, as libvirt's lease file),
// because tap names and ifindexes change across restarts and migrations.

export type LearnMode = 'any' | 'dhcp';
export interface LearnedAddress {
  ip: string;            // IPv4 dotted quad
  since?: string;        // ISO UTC, any mode
  expires?: string;      // ISO UTC, dhcp leases
  server?: string;       // dhcp: the server that sent the ACK
  source: 'kernel' | 'metadata' | 'state';
}
export interface LearnedEntry {
  owner: { name: string; uuid: string };
  mac: string;           // lower-case aa:bb:..
  mode: LearnMode;
  addresses: LearnedAddress[];
}
/** Key of a learning port's state: owner UUID and MAC, as libvirt's lease file. */
export const learnKey = (uuid: string, mac: string): string => `${uuid.toLowerCase()}/${mac.toLowerCase()}`;
