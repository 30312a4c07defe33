"""Markdown tables of the beacon quality runs (``benchmarks/beacon_quality.sh``): perplexity pooled
over documents (exp of summed NLL over summed tokens), passkey accuracy; one table per measure.

    .venv/bin/python benchmarks/quality_table.py docs/results/quality
"""

from __future__ import annotations

import json
import math
import sys
from collections import defaultdict
from pathlib import Path


def load(folder: Path) -> list[dict]:
    path = folder / "results.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def kind(method: str) -> str:
    return method.split("-")[0] if not method.startswith("beacon") else method


def ppl_table(rows: list[dict]) -> dict[tuple[str, int], float]:
    acc: dict[tuple[str, int], list[float]] = defaultdict(lambda: [0.0, 0])
    for r in rows:
        a = acc[(kind(r["method"]), r["length"])]
        a[0] += r["nll"]
        a[1] += r["tokens"]
    return {k: math.exp(v[0] / v[1]) for k, v in acc.items()}


def acc_table(rows: list[dict]) -> dict[tuple[str, int], tuple[float, int]]:
    acc: dict[tuple[str, int], list[float]] = defaultdict(lambda: [0.0, 0])
    for r in rows:
        a = acc[(kind(r["method"]), r["length"])]
        a[0] += r["score"]
        a[1] += 1
    return {k: (v[0] / v[1], int(v[1])) for k, v in acc.items()}


def grid(cells: dict, fmt, title: str) -> str:
    def order(m: str):
        name, _, num = m.partition("-")
        return (name != "full", name, int(num) if num.isdigit() else 0)

    methods = sorted({m for m, _ in cells}, key=order)
    lengths = sorted({n for _, n in cells})
    lines = [f"| {title} | " + " | ".join(f"{n // 1024}K" for n in lengths) + " |",
             "|---|" + "---|" * len(lengths)]
    for m in methods:
        lines.append(f"| {m} | " + " | ".join(fmt(cells[(m, n)]) if (m, n) in cells else "-" for n in lengths) + " |")
    return "\n".join(lines)


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/results/quality")
    ppl_fmt = lambda v: f"{v:.2f}"  # noqa: E731
    acc_fmt = lambda v: f"{100 * v[0]:.0f}% ({v[1]})"  # noqa: E731
    for name in sorted(p.name for p in root.iterdir() if p.is_dir()):
        rows = load(root / name)
        if not rows:
            continue
        print(f"### {name}\n")
        if rows[0]["task"] == "ppl":
            print(grid(ppl_table(rows), ppl_fmt, "perplexity"))
        else:
            print(grid(acc_table(rows), acc_fmt, "accuracy (items)"))
        print()


if __name__ == "__main__":
    main()
