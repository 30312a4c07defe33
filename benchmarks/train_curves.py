"""Training curves of a (multi-stage) beacon run: loss per sequence kind against training tokens.

    .venv/bin/python benchmarks/train_curves.py runs/stage1/log.jsonl runs/stage2/log.jsonl --out docs/x.png
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("logs", nargs="+", help="log.jsonl files, in the order the stages ran")
    p.add_argument("--out", required=True)
    p.add_argument("--every", type=int, default=25, help="steps per averaged point")
    args = p.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tokens, series, bounds = 0, defaultdict(list), []
    for log in args.logs:
        rows = [json.loads(x) for x in Path(log).read_text().splitlines() if x.strip()]
        for i in range(0, len(rows), args.every):
            chunk = rows[i : i + args.every]
            by = defaultdict(list)
            for r in chunk:
                by[r.get("kind", "text")].append(r["loss"])
            tokens += sum(r["tokens"] for r in chunk)
            for kind, losses in by.items():
                series[kind].append((tokens, sum(losses) / len(losses)))
        bounds.append(tokens)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for kind, pts in sorted(series.items()):
        ax.plot([t / 1e6 for t, _ in pts], [v for _, v in pts], marker=".", label=kind)
    for b in bounds[:-1]:
        ax.axvline(b / 1e6, color="grey", ls="--", lw=0.8)
    ax.set_xlabel("training tokens (millions)")
    ax.set_ylabel(f"mean loss per {args.every} steps")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"{args.out}: {tokens:,} tokens over {len(args.logs)} stage(s)")


if __name__ == "__main__":
    main()
