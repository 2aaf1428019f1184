#!/usr/bin/env bash
# The long tier: the test files that register more cases when INSTAR_LONG_TESTS=1 (see
# test/helpers/long.ts), run with them. `npm test` runs the short tier of the same files.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-oracles.sh
node scripts/build.mjs
mapfile -t files < <(grep -rlE "helpers/long\.ts'" test --include='*.test.ts' | sort)
if [ "${#files[@]}" -eq 0 ]; then echo "no long-tier test files found" >&2; exit 1; fi
INSTAR_LONG_TESTS=1 exec node --import tsx --test --test-concurrency=2 --test-reporter=spec "$@" "${files[@]}"
