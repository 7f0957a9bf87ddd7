#!/usr/bin/env bash
# The whole test suite, as a new user (and CI) runs it: lint, then every test once.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

echo "== rustfmt"
cargo fmt --all -- --check

echo "== clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== test tools"
KILN_OPENAPI_VALIDATOR_PYTHON="$(./scripts/tools.sh)"
export KILN_OPENAPI_VALIDATOR_PYTHON

echo "== chromium"
# The web UI's test (tests/cli_ui.rs) drives Debian's Chromium through chromedriver over
# WebDriver. Installed from the distribution when missing (CI runs as root); without them
# that test fails rather than skips.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "chromium and chromium-driver are missing and this is not root: tests/cli_ui.rs will fail" >&2
  fi
fi
KILN_CHROMIUM="$(command -v chromium || echo /usr/bin/chromium)"
KILN_CHROMEDRIVER="$(command -v chromedriver || echo /usr/bin/chromedriver)"
export KILN_CHROMIUM KILN_CHROMEDRIVER

echo "== localstack"
# LocalStack for the AWS adapters' contract tests (shared/store-aws): installed into
# localstack/ on first use, started, seeded, and stopped again when this script exits,
# whether the tests pass or not (KILN_KEEP_LOCALSTACK=1 leaves it running).
stop_localstack() { if [ "${KILN_KEEP_LOCALSTACK:-0}" != 1 ]; then localstack/stop.sh || true; fi; }
trap stop_localstack EXIT
localstack/start.sh
localstack/seed.sh >/dev/null
# shellcheck disable=SC1091
source localstack/.state/env
export KILN_LOCALSTACK=1

echo "== infra"
# The SAM template, offline: cfn-lint, sam validate --lint, and the names/keys/variables the
# code expects (with negative tests). The tools come from localstack/.venv (installed above).
infra/test_template.sh
# `sam build` as the README runs it, in this checkout (LocalStack's state and target/ present),
# with a stand-in cargo: seconds. The real arm64 cross-build compiles every dependency again
# for aarch64 in release (many minutes on a clean clone), so it is asked for:
# KILN_CROSS_BUILD=1 builds one function, KILN_SAM_BUILD_ALL=1 all of them.
infra/test_sam_build.sh
if [ "${KILN_CROSS_BUILD:-0}" = 1 ] || [ "${KILN_SAM_BUILD_ALL:-0}" = 1 ]; then
  infra/cross_build.sh
else
  echo "arm64 cross-build skipped (KILN_CROSS_BUILD=1 for one function, KILN_SAM_BUILD_ALL=1 for all)"
fi

echo "== functions"
# The Lambda binaries behind the runtime API emulator (cargo lambda watch), with real
# API Gateway v2 and SQS payloads, against the LocalStack started above.
functions/test_invoke.sh

echo "== bridge"
# A whole build through the Lambda binaries on the template's own resources: the stateful part
# of infra/template.yaml deployed to LocalStack through CloudFormation (private prefix, deleted
# after), an event-source bridge driving compile -> event-fanin -> dispatch -> runner (-> log-ingest
# / api), and the outcome compared with `kiln run`.
functions/test_bridge.sh

echo "== fuzz"
# Every fuzz target (fuzz/, cargo-fuzz on nightly) for KILN_FUZZ_SECS (20) seconds each;
# a crash fails the run. Longer runs: see README, Reliability.
scripts/fuzz.sh

echo "== tests"
mkdir -p target
# The end-to-end tests run the real binaries (kiln, and the runner function for --poll).
cargo build --workspace --bins --locked
cargo test --workspace --locked --no-fail-fast -- --include-ignored 2>&1 | tee target/test-output.log

# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' target/test-output.log
