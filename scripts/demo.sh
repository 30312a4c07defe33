#!/usr/bin/env bash
# Set everything up (idempotent), then run the main job on the embedded default:
# SmolLM2-135M-Instruct reads the whole of Moby-Dick with beacon compression and answers a prompt.
# Extra arguments go to `longctx generate` (e.g. --prompt "..." or a file of your own).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export LONGCTX_CACHE="${LONGCTX_CACHE:-$PWD/.cache}"
exec .venv/bin/longctx generate "$@"
