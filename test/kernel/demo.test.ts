// The README's first command runs `nwf-fast demo`: it must show every
// scenario delivered exactly as libvirt's rules say, under the nft backend
// and with the eBPF programs on the taps, and leave nothing behind.
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.js';
import { isRoot, ROOT_REASON } from './support/differential.js';

describe.skipIf(!isRoot)('nwf-fast demo', () => {
  it('delivers every scenario as libvirt would, with nft and with eBPF+nft, and cleans up', async () => {
    // Only the demo's own namespaces: other tests create and remove theirs meanwhile.
    const demoNetns = async () => (await execa('ip', ['netns', 'list'])).stdout.split('\n').filter((l) => l.startsWith('nwfdemo'));
    const before = await demoNetns();
    let out = '';
    const code = await main(['demo'], { out: (s) => void (out += s), err: (s) => void (out += s) });
    expect(out).toContain('every frame was delivered exactly when libvirt');
    expect(out).not.toContain('DIFFERS');
    expect(code).toBe(0);
    const rows = out.split('\n').filter((l) => /delivered|dropped/.test(l) && /^(vm\d|peer)/.test(l));
    expect(rows.length).toBeGreaterThanOrEqual(14);
    for (const r of rows) {
      const cols = r.match(/(delivered|dropped)/g) ?? [];
      expect(cols).toHaveLength(2);
      expect(cols[0]).toBe(cols[1]); // the nft and eBPF+nft columns agree
    }
    expect(await demoNetns()).toEqual(before);
  });
});

if (!isRoot) console.warn(`SKIP demo: ${ROOT_REASON}`);
