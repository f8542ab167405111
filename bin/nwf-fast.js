#!/usr/bin/env node
// Entry point: runs the compiled CLI from dist/ (built by `npm run build`, and
// by the prepare script for npm pack and git installs). The Node.js version is
// checked first, before anything that might not load on an older Node is
// imported.
import { existsSync } from 'node:fs';

function fail(message) {
  process.stderr.write(`nwf-fast: ${message}\n`);
  process.exitCode = 1; // the host lacks something nwf-fast needs: a runtime failure
}

if (!existsSync(new URL('../dist/cli/main.js', import.meta.url))) {
  fail(
    'the compiled CLI (dist/) is missing. In a checkout: npm run build. A git install builds it only where ' +
      "nwf-fast's scripts may run (allowScripts in the installing package.json, or npm install -g --allow-scripts=nwf-fast).",
  );
} else {
  import('../dist/cli/node-version.js').then(({ nodeVersionError }) => {
    const unsupported = nodeVersionError(process.versions.node);
    if (unsupported) return fail(unsupported.format());
    // `nwf-fast status | head`: a reader that goes away is not a failure, and the
    // command (a load, say) runs to its end rather than stopping half-way.
    for (const stream of [process.stdout, process.stderr]) {
      stream.on('error', (err) => {
        if (err.code !== 'EPIPE' && err.code !== 'ERR_STREAM_DESTROYED') throw err;
      });
    }
    return import('../dist/cli/main.js')
      .then(({ main }) => main(process.argv.slice(2)))
      .then((code) => {
        process.exitCode = code;
      });
  }).catch((err) => {
    console.error(err);
    process.exitCode = 70;
  });
}
