#!/usr/bin/env bash
# Issue 16's CPU measurements, each side by side in one process (full attention and beacon):
#  1. SmolLM2-135M (real weights, dtype chosen by CPU capability), w=1024, ratio 8, 8K and 32K:
#     prefill and decode against transformers' full attention (the CPU targets).
#  2. The official-code comparison's setting: fp32, randomly initialised SmolLM2 shape, w=1024,
#     ratio 8, q/k/v beacon projections, 8K and 16K.
#  3. The reading rate at the demo's settings (shipped adapter): beacon read vs stock forward.
# Writes docs/bench/issue16_*.json (+ .md); the CPU line is in each file.
set -euo pipefail
cd "$(dirname "$0")/.."
export LONGCTX_CACHE="${LONGCTX_CACHE:-$PWD/.cache}"
mkdir -p docs/bench
.venv/bin/longctx bench --lengths 8192 32768 --ratios 8 --window 1024 --json docs/bench/issue16_targets.json
.venv/bin/longctx bench --random-init --dtype fp32 --projections q k v --lengths 8192 16384 --ratios 8 \
  --window 1024 --json docs/bench/issue16_reference_setting.json
.venv/bin/python benchmarks/reading_rate.py --tokens 16384 --json docs/bench/issue16_reading_rate.json
