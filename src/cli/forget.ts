// nwf-fast forget DOMAIN [MAC]: drop learned addresses from learned.json.
import { parseMac } from '../ir/values.js';
import { learnKey } from '../ir/learning.js';
import { forgetEntries, learningPorts, readLearned, writeLearned } from '../host/learn/store.js';
import { addressText } from '../host/learn/status.js';
import { CODES, NwfError } from '../util/errors.js';
import { type Command, type ParsedArgs } from './args.js';
import { HOST_OPTIONS, liveHostFrom } from './host-options.js';
import type { CliIo } from './io.js';

export const forgetCommand: Command = {
  name: 'forget',
  summary: 'drop the learned addresses of a domain (or one of its MACs)',
  description:
    "Removes the learned addresses of DOMAIN (its name or UUID), or of its\ninterface MAC only, from <state_dir>/learned.json: for an operator who changed\na VM's address by hand. The VM's next start (or restore, or incoming\nmigration without metadata) then learns anew. A port running now keeps what\nthe kernel learned until it is restarted: the kernel's state wins at the next\nreconcile (said as a warning, exit 1). Holds the state lock.",
  options: HOST_OPTIONS,
  positionals: { usage: 'DOMAIN [MAC]', max: 2 },
  run: async (p: ParsedArgs, io: CliIo): Promise<number> => {
    const [domain, rawMac] = p.positionals;
    if (!domain) throw new NwfError(CODES.USAGE, 'forget: which domain?', { expected: 'DOMAIN [MAC]', hint: 'nwf-fast help forget' });
    const mac = rawMac === undefined ? undefined : parseMac(rawMac);
    if (rawMac !== undefined && !mac) throw new NwfError(CODES.USAGE, `forget: invalid MAC address '${rawMac}'`, { expected: 'a MAC address like 52:54:00:12:34:56' });
    const host = liveHostFrom(p);
    return host.locked(`forget ${domain}${mac ? ` ${mac}` : ''}`, async () => {
      const { state, removed } = forgetEntries(readLearned(host.config.stateDir), domain, mac);
      if (!removed.length) {
        io.out(`nothing learned is recorded for ${domain}${mac ? ` ${mac}` : ''}\n`);
        return 0;
      }
      writeLearned(host.config.stateDir, state);
      for (const e of removed) io.out(`forgot ${e.owner.name} ${e.mac} (${e.mode}): ${e.addresses.map(addressText).join(', ')}\n`);
      const gone = new Set(removed.map((e) => learnKey(e.owner.uuid, e.mac)));
      const running = learningPorts(host.ports()).filter((lp) => gone.has(lp.key));
      for (const lp of running) io.err(`warning: ${lp.port.tap} of ${lp.port.owner.name} is running: the kernel keeps its learned address until the port is restarted\n`);
      return running.length ? 1 : 0;
    });
  },
};
