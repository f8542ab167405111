// src/host/nft.ts through a RecordingRunner: the commands it runs, the input
// it hands nft, and how failures are reported. No kernel needed.
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { add, nftTable } from '../../src/backends/nft/build.js';
import { toNftJson } from '../../src/backends/nft/serialize.js';
import {
  listed,
  namedCounters,
  nftApply,
  nftCheck,
  nftCheckText,
  nftListRuleset,
  nftListTable,
  ruleCounters,
} from '../../src/host/nft.js';
import { CommandError, RecordingRunner } from '../../src/host/runner.js';
import { CODES } from '../../src/util/errors.js';

const t = nftTable('bridge', 'nwf');
const doc = toNftJson([add(t.table)]);

/** Records the file nft was pointed at (-f FILE) while it still exists. */
function recorder(reply: { exitCode?: number; stdout?: string; stderr?: string } = {}) {
  const files: string[] = [];
  const runner = new RecordingRunner((argv) => {
    const f = argv[argv.indexOf('-f') + 1];
    if (argv.includes('-f') && f) files.push(fs.readFileSync(f, 'utf8'));
    return reply;
  });
  return { runner, files };
}

describe('nft runner functions', () => {
  it('applies JSON inside a namespace through ip netns exec and a private file', async () => {
    const { runner, files } = recorder();
    await nftApply(doc, { runner, netns: 'nwft-1-host' });
    const argv = runner.calls[0]!.argv;
    expect(argv.slice(0, 7)).toEqual(['ip', 'netns', 'exec', 'nwft-1-host', 'nft', '-j', '-f']);
    expect(argv[7]).toMatch(/nwf-nft-.*\/batch\.json$/);
    expect(fs.existsSync(argv[7]!)).toBe(false); // removed afterwards
    expect(JSON.parse(files[0]!)).toEqual(doc);
  });

  it('checks JSON with -c and text without -j', async () => {
    const { runner, files } = recorder();
    await nftCheck(doc, { runner });
    await nftCheckText('add table bridge nwf\n', { runner });
    expect(runner.calls[0]!.argv.slice(0, 4)).toEqual(['nft', '-c', '-j', '-f']);
    expect(runner.calls[1]!.argv.slice(0, 3)).toEqual(['nft', '-c', '-f']);
    expect(runner.calls[1]!.argv[3]).toMatch(/batch\.nft$/);
    expect(files[1]).toBe('add table bridge nwf\n');
  });

  it('reports a rejected batch with argv, exit code and stderr', async () => {
    const stderr = 'internal:0:0-0: Error: No such file or directory; did you mean table ‘nwf’ in family bridge?\n';
    const { runner } = recorder({ exitCode: 1, stderr });
    const err = await nftCheck(doc, { runner, netns: 'ns1' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CommandError);
    const e = err as CommandError;
    expect(e.code).toBe(CODES.LOAD_FAILED);
    expect(e.exitCode).toBe(1);
    expect(e.stderr).toBe(stderr);
    expect(e.argv.slice(0, 5)).toEqual(['ip', 'netns', 'exec', 'ns1', 'nft']);
    expect(e.message).toContain('No such file or directory');
  });

  it('lists and parses JSON output', async () => {
    const listing = {
      nftables: [
        { metainfo: { version: '1.0.6', release_name: 'Lester Gooch #5', json_schema_version: 1 } },
        { table: { family: 'bridge', name: 'nwf', handle: 1 } },
        { counter: { family: 'bridge', name: 'cnt0', table: 'nwf', handle: 2, packets: 5, bytes: 300 } },
        {
          rule: {
            family: 'bridge',
            table: 'nwf',
            chain: 'c0',
            handle: 4,
            comment: 'drop it',
            expr: [{ match: { op: '==', left: {}, right: 34997 } }, { counter: { packets: 7, bytes: 420 } }, { drop: null }],
          },
        },
      ],
    };
    const runner = new RecordingRunner(() => ({ stdout: JSON.stringify(listing) }));
    const l = await nftListTable('bridge', 'nwf', { runner, netns: 'ns1' });
    expect(runner.calls[0]!.argv).toEqual(['ip', 'netns', 'exec', 'ns1', 'nft', '-j', 'list', 'table', 'bridge', 'nwf']);
    expect(listed(l, 'table')).toEqual([{ family: 'bridge', name: 'nwf', handle: 1 }]);
    expect(ruleCounters(l, 'c0')).toEqual([{ chain: 'c0', handle: 4, comment: 'drop it', packets: 7, bytes: 420 }]);
    expect(namedCounters(l).get('cnt0')).toEqual({ packets: 5, bytes: 300 });
    await nftListRuleset({ runner });
    expect(runner.calls[1]!.argv).toEqual(['nft', '-j', 'list', 'ruleset']);
  });

  it('reports unparsable list output as a command failure', async () => {
    const runner = new RecordingRunner(() => ({ stdout: 'table bridge nwf {' }));
    const err = (await nftListRuleset({ runner }).catch((e: unknown) => e)) as CommandError;
    expect(err).toBeInstanceOf(CommandError);
    expect(err.code).toBe(CODES.COMMAND_FAILED);
  });
});
