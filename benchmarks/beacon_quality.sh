#!/usr/bin/env bash
# Quality of a beacon adapter for the embedded default (SPEC 5), on text it never trained on:
#   1. perplexity on held-out State of the Union addresses (1990 on) at 8K/16K/32K: full attention
#      (to 8K: SmolLM2 has 8K positions), truncation and sink+recent at the beacon's KV budget, beacon r=8;
#   2. passkey at 16K/32K with the key at depths 0..0.875 (always outside the raw 1024-token window);
#   3. ratios 2..32 at 8K, the adapter against the copy-initialised one, on both measures.
# ADAPTER=path (default: the shipped adapter); NAME names the result folders; resumable.
set -euo pipefail
cd "$(dirname "$0")/.."
export LONGCTX_CACHE="${LONGCTX_CACHE:-$PWD/.cache}" HF_HUB_OFFLINE=1
A="${ADAPTER:-adapters/smollm2-135m-beacon}"; N="${NAME:-trained}"; O=docs/results/quality
E=".venv/bin/longctx eval"
DEPTHS="0 0.125 0.25 0.375 0.5 0.625 0.75 0.875"
SWEEP="beacon:2,beacon:4,beacon:8,beacon:16,beacon:32"
if [ "${PART:-all}" != sweep ]; then
  $E ppl --text sotu-heldout --lengths 8k,16k,32k --methods full,truncate,streaming,beacon --max-full-length 8192 \
    --adapter "$A" --out "$O/ppl-$N" > /dev/null
  $E passkey --lengths 16k,32k --depths $DEPTHS --methods truncate,streaming,beacon --adapter "$A" \
    --out "$O/passkey-$N" > /dev/null
fi
$E ppl --text sotu-heldout --lengths 8k --methods "$SWEEP" --adapter "$A" --out "$O/sweep-ppl-$N" > /dev/null
$E passkey --lengths 8k --depths 0 0.25 0.5 0.75 --methods "$SWEEP" --adapter "$A" --out "$O/sweep-passkey-$N" > /dev/null
echo "done $N $(date)"
