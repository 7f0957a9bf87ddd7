#!/usr/bin/env bash
# Runs every fuzz target (fuzz/, cargo-fuzz on the nightly toolchain) for a bounded time
# and prints one line per target: executions and crashes. Exits non-zero on a crash; the
# input that crashed is left in fuzz/artifacts/<target>/ (make it a regression test).
#
#   scripts/fuzz.sh              # 20 s per target (the test command)
#   KILN_FUZZ_SECS=600 scripts/fuzz.sh   # the longer run of the README's table
#   scripts/fuzz.sh compile protocol     # only these targets
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${KILN_FUZZ_SECS:-20}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(compile cloudevent protocol log_ingest webhook)

# cargo-fuzz, pinned, from crates.io when missing; the nightly toolchain too.
if ! cargo +nightly --version >/dev/null 2>&1; then
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version 2>/dev/null | grep -q '0.13.2'; then
  cargo install cargo-fuzz --version 0.13.2 --locked
fi

# One build for all targets. No sanitizer: the code under test is safe Rust, and without
# ASan a run does several times more executions; overflow checks and debug assertions
# stay on (fuzz/Cargo.toml). 16 codegen units: a faster build for slightly slower code.
build=(--sanitizer none --codegen-units 16)
started=$(date +%s)
cargo +nightly fuzz build "${build[@]}"
echo "fuzz build: $(( $(date +%s) - started )) s"

mkdir -p target/fuzz
status=0
for t in "${targets[@]}"; do
  log="target/fuzz/$t.log"
  # A corpus dir of its own per run, seeded from the checked-in seeds: the repository's
  # corpus stays the seeds.
  work="target/fuzz/corpus-$t"
  mkdir -p "$work"
  if cargo +nightly fuzz run "${build[@]}" "$t" "$work" "fuzz/corpus/$t" -- \
      -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536 -timeout=10 -print_final_stats=1 \
      >"$log" 2>&1; then
    crashes=0
  else
    crashes=1
    status=1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  echo "fuzz $t: ${runs:-?} executions in ${secs} s, ${crashes} crash(es)"
  if [ "$crashes" != 0 ]; then
    tail -40 "$log"
    ls fuzz/artifacts/"$t"/ 2>/dev/null || true
  fi
done
exit $status
