#!/usr/bin/env node
// Entry point: runs the compiled CLI from dist/ (built by `npm run build`, and
// by `prepack` for a package). The Node.js version is checked first, before
// anything that might not load on an older Node is imported.
import { nodeVersionError } from '../dist/cli/node-version.js';

const unsupported = nodeVersionError(process.versions.node);
if (unsupported) {
  process.stderr.write(`nwf-fast: ${unsupported.format()}\n`);
  process.exitCode = 1; // the host lacks something nwf-fast needs: a runtime failure
} else {
  // `nwf-fast status | head`: a reader that goes away is not a failure, and the
  // command (a load, say) runs to its end rather than stopping half-way.
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (err) => {
      if (err.code !== 'EPIPE' && err.code !== 'ERR_STREAM_DESTROYED') throw err;
    });
  }
  import('../dist/cli/main.js')
    .then(({ main }) => main(process.argv.slice(2)))
    .then(
      (code) => {
        process.exitCode = code;
      },
      (err) => {
        console.error(err);
        process.exitCode = 70;
      },
    );
}
