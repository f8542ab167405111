#!/usr/bin/env bash
# The main job on the built-in example: installs what it needs, then runs
# `nwf-fast demo`, which builds a demo host out of network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
exec node bin/nwf-fast.js demo "$@"
