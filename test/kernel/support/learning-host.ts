// The namespaced host of an IP-learning kernel test (learning*.test.ts): the
// demo host (the VM on tap vnet0 and a peer, createDemoHost), a work
// directory holding the state directory, and a pin directory of this
// process; created before the describe block's tests, removed after them.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import type { Endpoint } from '../../../src/lab/packet-io.js';
import type { Testbed } from '../../../src/lab/testbed.js';
import { createDemoHost } from './differential.js';

export interface LearningHost {
  /** The demo host (set before the first test). */
  tb: Testbed;
  /** A temporary directory for generations and the state directory. */
  work: string;
  /** The state directory, in `work`. */
  state: string;
  /** The pin directory (bpffs), of this process. */
  pinDir: string;
  /** The host options of a load on this host. */
  opts(): { stateDir: string; netns: string; pinDir: string };
  /** The VM's and the peer's interfaces (in their namespaces). */
  vm(): Endpoint;
  peer(): Endpoint;
}

/**
 * Registers the host's set-up and tear-down in the calling describe block
 * and returns it (filled in before its first test). `nsPrefix` names its
 * namespaces (unique per block), `name` its temporary and pin directories.
 */
export function learningHost(nsPrefix: string, name: string): LearningHost {
  const h = {
    opts: () => ({ stateDir: h.state, netns: h.tb.hostNs, pinDir: h.pinDir }),
    vm: () => ({ ns: h.tb.guest('vm').ns, ifname: 'eth0' }),
    peer: () => ({ ns: h.tb.guest('peer').ns, ifname: 'eth0' }),
  } as LearningHost;
  beforeAll(async () => {
    h.tb = await createDemoHost(nsPrefix);
    h.work = mkdtempSync(join(tmpdir(), `nwf-${name}-`));
    h.state = join(h.work, 'state');
    h.pinDir = `/sys/fs/bpf/nwf-fast-test-${name}-${process.pid}`;
  });
  afterAll(async () => {
    await h.tb?.destroy();
    if (h.work) rmSync(h.work, { recursive: true, force: true });
    if (h.pinDir) rmSync(h.pinDir, { recursive: true, force: true });
  });
  return h;
}
