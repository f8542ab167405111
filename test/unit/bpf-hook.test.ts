// Which attach mechanism each --bpf-hook choice gives, on kernels with and
// without tcx and where links can or cannot outlive the process.
import { describe, expect, it } from 'vitest';
import { planHooks, tapPinDir } from '../../src/host/bpf/hook.js';
import { CODES, NwfError } from '../../src/util/errors.js';

const all = { tcx: true, links: true };

describe('eBPF hook plans', () => {
  it('auto is tc (a tcx link costs an RCU grace period to create), whatever the kernel has', () => {
    expect(planHooks('auto', all)).toEqual({ out: 'tc', in: 'tc' });
    expect(planHooks('auto', { tcx: false, links: false })).toEqual({ out: 'tc', in: 'tc' });
  });

  it('tc is tc everywhere, tcx is tcx', () => {
    expect(planHooks('tc', { tcx: false, links: false })).toEqual({ out: 'tc', in: 'tc' });
    expect(planHooks('tcx', all)).toEqual({ out: 'tcx', in: 'tcx' });
  });

  it('xdp is XDP from the VM, tc to the VM', () => {
    expect(planHooks('xdp', all)).toEqual({ out: 'xdp', in: 'tc' });
    expect(planHooks('xdp', { tcx: false, links: true })).toEqual({ out: 'xdp', in: 'tc' });
  });

  it('refuses an explicit tcx or xdp that cannot be had, with the reason and a way out', () => {
    for (const [choice, can, why] of [
      ['tcx', { tcx: false, links: true }, /no tcx \(Linux 6\.6 or later\)/],
      ['tcx', { tcx: true, links: false }, /released when nwf-fast exits/],
      ['xdp', { tcx: true, links: false }, /released when nwf-fast exits/],
    ] as const) {
      let err: unknown;
      try {
        planHooks(choice, can);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(NwfError);
      expect((err as NwfError).code).toBe(CODES.KERNEL_UNSUPPORTED);
      expect((err as NwfError).message).toMatch(why);
      expect((err as NwfError).format()).toMatch(/hint/i);
    }
  });

  it('pins a tap\'s links under a name bpffs accepts (no dots)', () => {
    expect(tapPinDir('/sys/fs/bpf/nwf-fast', 'vnet0')).toBe('/sys/fs/bpf/nwf-fast/tap-vnet0');
    expect(tapPinDir('/p', 'eth0.100')).toBe('/p/tap-eth0%2e100');
    expect(tapPinDir('/p', 'a%b')).toBe('/p/tap-a%25b');
  });
});
