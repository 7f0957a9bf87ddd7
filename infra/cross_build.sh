#!/usr/bin/env bash
# A real `sam build` of the template's functions for arm64 (SAM CLI, cargo-lambda, zig: what a
# user runs before `sam deploy`), so a broken build is caught before a user meets it. Prints the
# time and each bootstrap's size, and checks each is an arm64 ELF executable.
#   infra/cross_build.sh                 one function (KILN_SAM_BUILD_FUNCTION, default
#                                        DispatchFunction)
#   KILN_SAM_BUILD_ALL=1 infra/cross_build.sh   every function of the template
# Cargo's release build for aarch64 lands in target/ (reused by the next run); SAM's output goes to
# a temp dir. Needs localstack/.venv (SAM CLI, cargo-lambda, zig) and the Rust target
# aarch64-unknown-linux-gnu (added with rustup when missing).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/localstack/.venv/bin"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
export SAM_CLI_TELEMETRY=0 __SAM_CLI_APP_DIR="$ROOT/target/sam-cli"
mkdir -p "$__SAM_CLI_APP_DIR"

if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
  rustup target add aarch64-unknown-linux-gnu
fi

functions=()
if [ "${KILN_SAM_BUILD_ALL:-0}" != 1 ]; then functions=("${KILN_SAM_BUILD_FUNCTION:-DispatchFunction}"); fi

cd "$ROOT/infra"
t0=$(date +%s)
# SAM finds cargo-lambda, and cargo-lambda finds zig, on PATH (both in localstack/.venv).
if ! PATH="$VENV:$PATH" "$VENV/sam" build "${functions[@]}" --build-dir "$TMP/build" --cache-dir "$TMP/cache" \
  >"$TMP/build.log" 2>&1; then
  tail -30 "$TMP/build.log" >&2
  echo "cross_build.sh: sam build ${functions[*]:-(all)} failed" >&2
  exit 1
fi
secs=$(( $(date +%s) - t0 ))
n=0
for boot in "$TMP"/build/*/bootstrap; do
  fn="$(basename "$(dirname "$boot")")"
  # ELF, 64-bit, machine 0xB7 (AArch64) at offset 18, executable.
  machine="$(od -An -tx1 -j18 -N2 "$boot" | tr -d ' \n')"
  if [ "$(head -c4 "$boot" | od -An -c | tr -d ' \n')" != "177ELF" ] || [ "$machine" != "b700" ] || [ ! -x "$boot" ]; then
    echo "cross_build.sh: $fn: bootstrap is not an arm64 ELF executable (machine $machine)" >&2
    exit 1
  fi
  printf '%-22s %6.1f MB\n' "$fn" "$(awk -v b="$(stat -c %s "$boot")" 'BEGIN { print b / 1e6 }')"
  n=$((n + 1))
done
[ "$n" -gt 0 ] || { echo "cross_build.sh: sam build made no bootstrap" >&2; exit 1; }
echo "cross_build.sh: ok ($n arm64 function(s) in ${secs}s)"
