#!/usr/bin/env bash
# Set everything up (idempotent), then lint and run the whole test suite on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export LONGCTX_CACHE="${LONGCTX_CACHE:-$PWD/.cache}" HF_HUB_OFFLINE=1
.venv/bin/ruff check src tests benchmarks
exec .venv/bin/python -m pytest -q "$@"
