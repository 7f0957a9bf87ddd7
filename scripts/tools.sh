#!/usr/bin/env bash
# Test tools that are not Rust: an OpenAPI validator, pinned (the whole resolved set is
# in tools-constraints.txt), in an ignored venv of the project. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.tools/venv
stamp=$venv/.installed-$(sha256sum scripts/tools-constraints.txt | cut -c1-16)
if [ ! -f "$stamp" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -c scripts/tools-constraints.txt openapi-spec-validator
  touch "$stamp"
fi
echo "$PWD/$venv/bin/python"
