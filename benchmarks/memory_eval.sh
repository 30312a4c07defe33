#!/usr/bin/env bash
# Does the beacon memory carry information? (issue 12) For one adapter, on held-out text:
#   ppl    : recovered fraction at 4K/8K on 6 held-out documents (full, beacon r8, beacon-nomem r8)
#   key    : passkey with the key only in the memory (--in-memory), 20 items per cell, ratio 4 at
#            2,000 and 2,048 tokens (key4k: 4,096; key8: ratio 8 at 8K), beside truncation and
#            sink+recent at the beacon's KV budget, and full attention
#   harm   : perplexity at 16K against truncation and sink+recent at the same KV budget
# ADAPTER=dir (default: the shipped adapter), NAME=label, PARTS="ppl key key4k key8 harm"; resumable.
# BASELINES=NAME seeds each folder with that earlier run's rows of the methods that do not use the
# adapter (full, truncate, streaming: same items, same settings), so only the beacon rows are run.
set -euo pipefail
cd "$(dirname "$0")/.."
export LONGCTX_CACHE="${LONGCTX_CACHE:-$PWD/.cache}" HF_HUB_OFFLINE=1
A="${ADAPTER:-adapters/smollm2-135m-beacon}"; N="${NAME:-shipped}"; O="docs/results/memory/$N"
E=".venv/bin/longctx eval --adapter $A --window 512"
SAMPLES="${SAMPLES:-20}"
seed() {  # seed FOLDER: the adapter-free rows of docs/results/memory/$BASELINES/FOLDER
  [ -n "${BASELINES:-}" ] && [ -f "docs/results/memory/$BASELINES/$1/results.jsonl" ] || return 0
  [ -f "$O/$1/results.jsonl" ] && return 0
  mkdir -p "$O/$1"
  grep -v '"method": "beacon' "docs/results/memory/$BASELINES/$1/results.jsonl" > "$O/$1/results.jsonl" || true
}
run() {  # run FOLDER TASK ARGS...: seed the folder, then evaluate into it
  local f=$1; shift
  seed "$f"
  $E "$@" --out "$O/$f" > /dev/null
}
for part in ${PARTS:-ppl key key4k key8 harm}; do
  case $part in
    ppl)  run ppl ppl --text sotu-heldout --documents 6 --lengths 4k,8k --methods full,beacon:8,beacon-nomem:8 ;;
    key)  run passkey-r4 passkey --in-memory --samples "$SAMPLES" --lengths 2000,2048 --ratio 4 \
            --methods full,truncate,streaming,beacon:4,beacon-nomem:4 ;;
    key4k) run passkey-r4 passkey --in-memory --samples "$SAMPLES" --lengths 4096 --ratio 4 \
            --methods full,truncate,streaming,beacon:4 ;;
    key8) run passkey-r8 passkey --in-memory --samples "$SAMPLES" --lengths 8192 --ratio 8 \
            --methods full,truncate,streaming,beacon:8 ;;
    harm) run ppl-16k ppl --text sotu-heldout --documents 6 --lengths 16k --methods truncate,streaming,beacon:8 ;;
  esac
  echo "done $N $part $(date)"
done
