"""CREAM vs PoSE vs RoPE-only vs the base model (and CREAM + beacon) through the eval harness.

Needs the three extended models (see recipes/smollm2-135m-cream.yaml):
    longctx train --recipe recipes/smollm2-135m-cream.yaml                                  # CREAM
    longctx train --recipe recipes/smollm2-135m-cream.yaml --method pose --out runs/smollm2-pose
    longctx train --recipe recipes/smollm2-135m-cream.yaml --steps 0 --out runs/smollm2-rope  # RoPE only
then ``python benchmarks/cream_compare.py`` (resumable; parts run in order of priority, so a
stopped run still leaves the most important tables; ``--parts`` picks some).

Full attention over 32K tokens takes ~4-5 min per forward on a 2-core CPU, so the retrieval
tasks use few items: every number is printed with its item count.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from longctx import BeaconAdapter, load_model
from longctx.cli import SHIPPED_ADAPTERS
from longctx.data import read_text
from longctx.eval import run_eval
from longctx.eval.report import write_report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="docs/results/cream")
    ap.add_argument("--runs", default="runs", help="folder holding smollm2-{rope,pose,cream}/model")
    ap.add_argument("--parts", nargs="+", default=None, help="subset of the parts below, by name")
    args = ap.parse_args()
    model, tok = load_model("smollm2-135m", dtype="bf16")
    adapter = BeaconAdapter.load(SHIPPED_ADAPTERS["smollm2-135m"], model)
    ext = {n: f"{args.runs}/smollm2-{n}/model" for n in ("rope", "pose", "cream")}
    for p in ext.values():
        if not Path(p).exists():
            raise SystemExit(f"missing {p}: train it first (see this script's docstring)")
    extended = ",".join(f"{n}=full@{p}" for n, p in ext.items()) + f",cream+beacon=beacon:8@{ext['cream']}"
    every = "base=full," + extended
    docs = [("sotu-heldout", read_text("sotu-heldout"))]  # addresses from 1990 on: never trained on
    parts = [  # (name, task, methods, lengths, depths/positions)
        ("ppl", "ppl", every, "8k,16k,32k", None),
        ("passkey-16k", "passkey", extended, "16k", [0.25, 0.5, 0.75]),
        ("kv-16k", "kv", extended, "16k", [0.0, 0.5, 1.0]),
        ("lines-16k", "lines", extended, "16k", [0.5]),
        ("base-8k", None, "base=full", "8k", [0.25, 0.5, 0.75]),
        ("passkey-8k", "passkey", extended, "8k", [0.25, 0.5, 0.75]),  # what the extension kept at 8K
        ("kv-32k", "kv", "pose=full@{pose},cream=full@{cream},cream+beacon=beacon:8@{cream}", "32k", [0.5]),
        ("passkey-32k", "passkey", "pose=full@{pose},cream=full@{cream},cream+beacon=beacon:8@{cream}", "32k", [0.5]),
        ("base-16k", None, "base=full", "16k", [0.25, 0.5, 0.75]),
    ]
    for name, task, methods, lengths, depths in parts:
        if args.parts and name not in args.parts:
            continue
        methods = methods.format(**ext)
        for t in [task] if task else ["passkey", "kv", "lines"]:
            kw = {"documents": docs} if t == "ppl" else {"depths" if t == "passkey" else "positions": depths}
            folder = Path(args.out) / t  # one folder per task; rows are keyed by method and item
            print(f"== {name}: {t} at {lengths} with {methods}", flush=True)
            run_eval(t, model, tok, folder, methods=methods, lengths=lengths, samples=len(depths or [0]),
                     window=1024, ratio=8, adapter=adapter, task_kwargs=kw,
                     config={"model": "smollm2-135m", "extended": ext, "part": name})
            print(write_report(folder).read_text(), flush=True)


if __name__ == "__main__":
    main()
