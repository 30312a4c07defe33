#!/usr/bin/env bash
# Full attention vs beacon, side by side in one process (SmolLM2-135M, bf16, CPU).
# Writes docs/bench/inference.json and .md; see docs/benchmarks.md for the numbers we saw.
set -euo pipefail
cd "$(dirname "$0")/.."
export LONGCTX_CACHE="${LONGCTX_CACHE:-$PWD/.cache}"
mkdir -p docs/bench
.venv/bin/longctx bench --lengths 4096 8192 16384 32768 --ratios 2 8 32 --window 1024 \
  --json docs/bench/inference.json "$@"
