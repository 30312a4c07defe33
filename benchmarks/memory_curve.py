"""Held-out memory measures against training tokens, one point per evaluated adapter (issue 12).

    .venv/bin/python benchmarks/memory_curve.py docs/results/memory/curve.json --out docs/results/memory/curve.png

``curve.json``: a list of {name, tokens, rf_4k, rf_8k, digits_2000, digits_2048, exact_2000,
exact_2048, digits_8192, exact_8192, digits_16384, exact_16384} (any measure may be missing), filled from each adapter's report and
``benchmarks/passkey_digits.py``. Left: recovered fraction (target 0.5); right: mean leading digits
of the 5-digit key recalled from the memory (5 = exact; target 80% exact).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("table")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(json.loads(Path(args.table).read_text()), key=lambda r: r["tokens"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    panels = [(axes[0], [("rf_4k", "4K"), ("rf_8k", "8K")], "recovered fraction", 0.5),
              (axes[1], [("digits_2000", "2,000 tokens, r4"), ("digits_2048", "2,048 tokens, r4"),
                         ("digits_8192", "8,192 tokens, r8"), ("digits_16384", "16,384 tokens, r8")],
               "passkey from memory: leading digits of 5", 5.0)]
    for ax, series, title, target in panels:
        for key, label in series:
            pts = [(r["tokens"] / 1e6, r[key]) for r in rows if r.get(key) is not None]
            ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=label)
        ax.axhline(target, color="grey", linestyle="--", linewidth=0.8, label="target")
        ax.set_xlabel("training tokens (millions, all stages)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for r in rows:
        if r.get("rf_8k") is not None:
            axes[0].annotate(r["name"], (r["tokens"] / 1e6, r["rf_8k"]), fontsize=7, xytext=(3, -10),
                             textcoords="offset points")
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
