#!/usr/bin/env bash
# The whole test suite: installs what it needs, then runs the fast unit tests
# followed by the kernel tests (network namespaces; these skip with a visible
# reason when not run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
npm run --silent typecheck
npx vitest run --project unit --passWithNoTests
npx vitest run --project kernel --passWithNoTests
