#!/usr/bin/env bash
# The evaluation behind docs/results.md: SmolLM2-135M-Instruct (bf16, CPU), each task with every
# method side by side; full attention up to 16K (SmolLM2 has 8K positions; at 32K one full forward
# takes ~5 min here; MAXFULL=8192 for the generation tasks). Resumable: rerunning skips finished items.
#   TASKS="ppl passkey" LENGTHS=4k,8k SAMPLES=2 METHODS=beacon bash benchmarks/eval_results.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export LONGCTX_CACHE="${LONGCTX_CACHE:-$PWD/.cache}" HF_HUB_OFFLINE=1
L="${LENGTHS:-4k,8k,16k,32k}"
A=(); [ -n "${ADAPTER:-}" ] && A=(--adapter "$ADAPTER")   # e.g. ADAPTER=copy-init
for task in ${TASKS:-ppl passkey needle kv lines ruler-multikey ruler-vartrack ruler-cwe}; do
  .venv/bin/longctx eval "$task" --lengths "$L" --samples "${SAMPLES:-2}" --max-full-length "${MAXFULL:-16384}" \
    --methods "${METHODS:-full,truncate,streaming,beacon}" --out "docs/results/$task" "${A[@]}" > /dev/null
  echo "done $task $L $(date)"
done
