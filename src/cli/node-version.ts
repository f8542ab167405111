// Which Node.js versions run nwf-fast (the CLI and its runtime dependencies).
// bin/nwf-fast.js checks this before it loads anything else, so a too-old
// Node gets this message instead of a syntax or import error from a
// dependency. Keep this module free of imports other than util/errors and of
// syntax newer than the oldest Node it has to refuse.
//
// The floor comes from the dependencies' engines fields: execa 9 declares
// `^18.19.0 || >=20.5.0` (the strictest); koffi declares
// none (koffi's prebuilt addon uses Node-API). nwf-fast's own code avoids
// APIs newer than Node 18.19 (e.g. import.meta.dirname, Node 20.11). Verified:
// the CLI, including `nwf-fast demo` (nft, libnftables, libbpf, clang), runs
// on Debian 12's nodejs 18.20. The development tools need more (vite 8 and
// vitest 4: Node 20.19 or 22.12 and later): see README, Node.js versions.
import { CODES, NwfError } from '../util/errors.js';

/** The same range as package.json `engines.node` (a unit test keeps them equal). */
export const NODE_ENGINES = '^18.19.0 || >=20.5.0';

/** Whether a Node.js version (`process.versions.node`, e.g. `18.20.4`) is in NODE_ENGINES. */
export function nodeSupported(version: string): boolean {
  const [major, minor] = version.split('.').map((s) => Number.parseInt(s, 10));
  if (major === undefined || minor === undefined || Number.isNaN(major) || Number.isNaN(minor)) return false;
  if (major === 18) return minor >= 19;
  if (major === 20) return minor >= 5;
  return major > 20;
}

/** The error to refuse this Node.js with, or undefined when it is supported. */
export function nodeVersionError(version: string): NwfError | undefined {
  if (nodeSupported(version)) return undefined;
  return new NwfError(CODES.KERNEL_UNSUPPORTED, `Node.js ${version} is not supported`, {
    expected: `Node.js ${NODE_ENGINES}: 18.19 or a later 18.x (Debian 12's nodejs package), or 20.5 or later`,
    hint: 'install a supported Node.js and run nwf-fast with it',
  });
}
