// nwf-fast restore: load the generation recorded as loaded (boot).
import { restoreLast } from '../host/live/restore.js';
import { type Command, type ParsedArgs } from './args.js';
import { HOST_OPTIONS, hostOptions, lockedCommand } from './host-options.js';
import type { CliIo } from './io.js';

export const restoreCommand: Command = {
  name: 'restore',
  summary: 'load the recorded generation (at boot, before libvirt)',
  description:
    'Puts back what the state directory records as loaded (the last load and the\nport changes since), as it is (a full load), refusing nothing: interfaces\nthat do not exist yet are reported, their rules apply from the moment they\nappear. After `nwf-fast unload` nothing is recorded as loaded and nothing is\nrestored. Run by nwf-fast-restore.service. Holds the state lock.',
  options: HOST_OPTIONS,
  run: async (p: ParsedArgs, io: CliIo): Promise<number> => {
    const r = await lockedCommand(p, 'restore', () => restoreLast(hostOptions(p)));
    if (!r.restored) {
      io.out('nothing recorded as loaded: nothing to restore\n');
      return 0;
    }
    io.out(`restored generation ${r.restored.id} (${r.restored.interfaces} interface(s)) in ${r.restored.commit.ms.apply.toFixed(1)} ms\n`);
    if (r.missingTaps.length) io.out(`not present yet (protected when they appear): ${r.missingTaps.join(', ')}\n`);
    if (r.seeded) io.out(`learning ports seeded with their learned addresses: ${r.seeded}${r.kernelRead ? '' : ' (from learned.json: the kernel\'s learned state could not be read)'}\n`);
    return 0;
  },
};
