#!/usr/bin/env bash
# `sam build` works in a checkout where the tests ran. It once failed there: with SAM's cache on,
# SAM hashes everything under `CodeUri: ..` (target/, the venvs, localstack/.state with its links
# into a JDK) and a dangling link ends the build.
# This runs the SAM CLI's own build (the template, samconfig.toml's settings, the build graph, the
# rust-cargolambda workflow, the copy of each artifact) with a stand-in `cargo` on PATH that
# records each `cargo lambda build` and leaves a placeholder bootstrap: seconds, not the twelve
# minutes of a real cross-build (infra/cross_build.sh does that). With a dangling link planted in
# localstack/.state:
#   - `sam build`, as the README says, must succeed and build every function of the template, each
#     with `--arm64 --bin <its binary>`, each artifact a bootstrap;
#   - `sam build --cached` must fail on the planted link: SAM does walk the checkout then, so the
#     first run proves the settings keep it from doing so.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/localstack/.venv/bin"
TMP="$(mktemp -d)"
PROBE="$ROOT/localstack/.state/kiln-sam-probe"
created=()
cleanup() {
  rm -rf "$PROBE"
  for f in "${created[@]}"; do rm -f "$f"; done
  rm -rf "$TMP"
}
trap cleanup EXIT
export SAM_CLI_TELEMETRY=0 __SAM_CLI_APP_DIR="$ROOT/target/sam-cli"
mkdir -p "$__SAM_CLI_APP_DIR" "$PROBE" "$TMP/bin"
ln -sfn /nonexistent/kiln-sam-probe/src.zip "$PROBE/src.zip"

# The stand-in cargo (and cargo-lambda, which SAM also looks up): records its arguments; writes
# target/lambda/<bin>/bootstrap only where none exists (a real build's stays as it is).
cat >"$TMP/bin/cargo" <<EOF
#!/usr/bin/env bash
echo "\$*" >>"$TMP/calls"
bin=""; prev=""
for a in "\$@"; do [ "\$prev" = "--bin" ] && bin="\$a"; prev="\$a"; done
out="target/lambda/\$bin/bootstrap"
if [ -n "\$bin" ] && [ ! -e "\$out" ]; then
  mkdir -p "\$(dirname "\$out")" && echo placeholder >"\$out" && echo "\$PWD/\$out" >>"$TMP/created"
fi
EOF
chmod +x "$TMP/bin/cargo"
cp "$TMP/bin/cargo" "$TMP/bin/cargo-lambda"

# The functions and binaries, from the template (SAM's own YAML reader).
"$VENV/python" - "$ROOT/infra/template.yaml" >"$TMP/expected" <<'PY'
import sys
from samtranslator.yaml_helper import yaml_parse
t = yaml_parse(open(sys.argv[1]).read())
arch = t["Globals"]["Function"]["Architectures"][0]
for k, r in t["Resources"].items():
    if r["Type"] == "AWS::Serverless::Function":
        print(k, r["Metadata"]["BuildProperties"]["Binary"], arch)
PY

cd "$ROOT/infra"
t0=$(date +%s)
if ! PATH="$TMP/bin:$VENV:$PATH" "$VENV/sam" build --build-dir "$TMP/build" --cache-dir "$TMP/cache" >"$TMP/build.log" 2>&1; then
  tail -20 "$TMP/build.log" >&2
  echo "test_sam_build.sh: sam build failed with a dangling link in localstack/.state" >&2
  exit 1
fi
if [ -f "$TMP/created" ]; then mapfile -t created <"$TMP/created"; fi
failures=0
while read -r logical binary arch; do
  if ! grep -qx -- "lambda build --release --$arch --bin $binary" "$TMP/calls"; then
    echo "test_sam_build.sh: $logical: no 'cargo lambda build --release --$arch --bin $binary'" >&2
    failures=$((failures + 1))
  fi
  if [ ! -s "$TMP/build/$logical/bootstrap" ]; then
    echo "test_sam_build.sh: $logical: no bootstrap in SAM's build output" >&2
    failures=$((failures + 1))
  fi
done <"$TMP/expected"
[ "$failures" -eq 0 ] || exit 1
echo "sam build with localstack/.state's dangling link: ok ($(wc -l <"$TMP/expected") functions, $(( $(date +%s) - t0 ))s)"

if PATH="$TMP/bin:$VENV:$PATH" "$VENV/sam" build --cached --build-dir "$TMP/build2" --cache-dir "$TMP/cache2" >"$TMP/cached.log" 2>&1; then
  echo "test_sam_build.sh: sam build --cached passed: SAM no longer walks the checkout, or the probe is not in its way (fix the test)" >&2
  exit 1
fi
if ! grep -q "FileNotFoundError" "$TMP/cached.log"; then
  tail -20 "$TMP/cached.log" >&2
  echo "test_sam_build.sh: sam build --cached failed, but not on the planted link" >&2
  exit 1
fi
echo "negative test sam-build-cached: refused (SAM's cache walks the checkout: FileNotFoundError on the planted link)"
echo "infra/test_sam_build.sh: ok"
