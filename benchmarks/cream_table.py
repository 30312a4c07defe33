"""One Markdown table of the context-extension comparison (``benchmarks/cream_compare.py``):
perplexity by length, retrieval accuracy by task, length and position, per model.

    .venv/bin/python benchmarks/cream_table.py docs/results/cream
"""

from __future__ import annotations

import sys
from pathlib import Path

from longctx.eval.report import load, summary

ORDER = ["base", "rope", "pose", "cream", "cream+beacon"]


def main(folder: str) -> None:
    root = Path(folder)
    cols: list[tuple[str, int, float | None]] = []  # (task, length, position or None)
    cells: dict[tuple[str, str, int, float | None], str] = {}
    for task_dir in sorted(p for p in root.iterdir() if (p / "results.jsonl").exists()):
        rows = load(task_dir)
        for (task, name, length), v in summary(rows).items():
            if "ppl" in v:
                cells[(name, task, length, None)] = f"{v['ppl']:.2f}"
            else:
                cells[(name, task, length, None)] = f"{v['score']:.0f}% ({v['n']})"
            for r in rows:
                if "position" in r and r.get("name", r["kind"]) == name and r["length"] == length:
                    pos = round(r["position"], 2)
                    same = [x["score"] for x in rows if x.get("name", x["kind"]) == name and x["length"] == length
                            and round(x.get("position", -1), 2) == pos]
                    cells[(name, task, length, pos)] = f"{100 * sum(same) / len(same):.0f}%"
    keys = sorted({k[1:] for k in cells}, key=lambda k: (k[0] != "ppl", k[0], k[1], -1 if k[2] is None else k[2]))
    cols = [k for k in keys if k[0] == "ppl" or k[2] is None or any(c[3] == k[2] for c in cells if c[1] == "kv")]
    names = [n for n in ORDER if any(k[0] == n for k in cells)] + sorted({k[0] for k in cells} - set(ORDER))

    def head(k):
        task, length, pos = k
        what = "ppl" if task == "ppl" else task
        return f"{what} {length // 1024}K" + (f" @{pos:g}" if pos is not None else "")

    print("| model | " + " | ".join(head(k) for k in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for n in names:
        print(f"| {n} | " + " | ".join(cells.get((n, *k), "-") for k in cols) + " |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/results/cream")
