#!/usr/bin/env bash
# The load run of the README's Reliability table: KILN_LOAD_BUILDS (200) concurrent builds
# of 5 stages x 3 steps through `kiln dev` (local backend, 127.0.0.1 only), all of which must
# succeed with byte-exact logs; writes bench/results/load-local-latest.json (dispatch
# p50/p99, events applied per second, kiln dev's peak memory). The test command runs the
# same test with 20 builds.
set -euo pipefail
cd "$(dirname "$0")/.."
export KILN_LOAD_BUILDS="${KILN_LOAD_BUILDS:-200}"
export KILN_LOAD_REPORT="${KILN_LOAD_REPORT:-bench/results/load-local-latest.json}"
cargo test -p kiln-cli --locked --test cli_load -- --nocapture
echo "report: $KILN_LOAD_REPORT"
