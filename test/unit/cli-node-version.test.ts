// Which Node.js versions nwf-fast runs on: package.json engines and the
// check bin/nwf-fast.js makes before loading anything else agree, and the
// refusal says what was found and what is needed. (The installed package's
// bin refusing an old Node is checked in test/kernel/package.test.ts.)
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { NODE_ENGINES, nodeSupported, nodeVersionError } from '../../src/cli/node-version.js';

const PKG = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { engines: { node: string } };

describe('Node.js versions', () => {
  it('package.json engines says what the CLI checks', () => {
    expect(PKG.engines.node).toBe(NODE_ENGINES);
  });
  it.each([
    ['16.20.2', false],
    ['18.18.2', false],
    ['18.19.0', true],
    ['18.20.4', true],
    ['19.9.0', false],
    ['20.4.0', false],
    ['20.5.0', true],
    ['20.20.2', true],
    ['22.12.0', true],
    ['24.1.0', true],
    ['garbage', false],
  ])('%s supported: %s', (v, ok) => {
    expect(nodeSupported(v)).toBe(ok);
  });
  it('the refusal names the version found and the versions needed', () => {
    const e = nodeVersionError('18.12.1');
    expect(e?.format()).toMatch(/error NWF\d+: Node\.js 18\.12\.1 is not supported/);
    expect(e?.format()).toContain(NODE_ENGINES);
    expect(nodeVersionError(process.versions.node)).toBeUndefined();
  });
});
