"""Markdown tables of the context-extension comparison (``benchmarks/cream_compare.py``):
perplexity by length; retrieval accuracy by task and length; accuracy by key position / depth.

    .venv/bin/python benchmarks/cream_table.py docs/results/cream
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

from longctx.eval.report import load, method_name, summary

ORDER = ["base", "rope", "pose", "cream", "cream+beacon"]


def _table(title: str, cols: list, names: list[str], cell) -> str:
    lines = [f"| {title} | " + " | ".join(h for h, _ in cols) + " |", "|---|" + "---|" * len(cols)]
    lines += [f"| {n} | " + " | ".join(cell(n, k) for _, k in cols) + " |" for n in names]
    return "\n".join(lines)


def main(folder: str) -> None:
    rows = [r for p in sorted(Path(folder).iterdir()) if (p / "results.jsonl").exists() for r in load(p)]
    s = summary(rows)
    seen = {method_name(r) for r in rows}
    names = [n for n in ORDER if n in seen] + sorted(seen - set(ORDER))
    ppl = sorted({(t, L) for t, _, L in s if t == "ppl"}, key=lambda k: k[1])
    acc = sorted({(t, L) for t, _, L in s if t != "ppl"})

    def fmt(n, k):
        v = s.get((k[0], n, k[1]))
        return "-" if v is None else (f"{v['ppl']:.2f}" if "ppl" in v else f"{v['score']:.0f}% ({v['n']})")

    out = [_table("perplexity", [(f"{k[1] // 1024}K", k) for k in ppl], names, fmt), ""]
    out += [_table("accuracy (items)", [(f"{t} {L // 1024}K", (t, L)) for t, L in acc], names, fmt), ""]
    where: dict[tuple, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["task"] != "ppl":
            where[(method_name(r), r["task"], r["length"])][round(r.get("position", r.get("depth", -1)), 2)].append(r["score"])

    def by_pos(n, k):
        cells = where.get((n, *k))
        return "-" if not cells else ", ".join(f"{p:g}: {100 * sum(v) / len(v):.0f}%" for p, v in sorted(cells.items()))

    out += [_table("by position / depth", [(f"{t} {L // 1024}K", (t, L)) for t, L in acc], names, by_pos)]
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/results/cream")
