#!/usr/bin/env bash
# The whole test suite: oracles (installed when missing), build, type check, lint, then every
# test file under node's built-in test runner. Long fuzz campaigns have their own script.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-oracles.sh
node scripts/build.mjs
npx tsc --noEmit -p .
npx eslint .
mapfile -t files < <(find test -name '*.test.ts' | sort)
if [ "${#files[@]}" -eq 0 ]; then echo "no test files found" >&2; exit 1; fi
# spec reporter: one line per test, and the failing tests listed again after the summary, so a
# CI log that keeps only its tail still names what failed.
exec node --import tsx --test --test-concurrency=2 --test-reporter=spec "$@" "${files[@]}"
