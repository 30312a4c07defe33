"""Assemble docs/results.md from the result folders under docs/results/ (after eval_results.sh).

    python benchmarks/results_md.py [INTRO.md]    # default intro: benchmarks/results_intro.md
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from longctx.eval.report import load, markdown, summary, write_report

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent / "docs" / "results"
ORDER = ["ppl", "passkey", "needle", "kv", "lines", "ruler-multikey", "ruler-vartrack", "ruler-cwe"]
BASELINES = ("full", "truncate", "streaming")


def _value(v: dict) -> float:
    return v["ppl"] if "ppl" in v else v["score"]


def versus(s: dict, task: str, lengths: list[int], method: str = "beacon") -> list[str]:
    """Cells of ``method`` against the best baseline measured at each length, with the margin."""
    cells = []
    for L in lengths:
        mine = s.get((task, method, L))
        base = [(k, s[(task, k, L)]) for k in BASELINES if (task, k, L) in s]
        if mine is None or not base:
            cells.append("-")
            continue
        lower = "ppl" in mine
        name, best = min(base, key=lambda kv: _value(kv[1])) if lower else max(base, key=lambda kv: _value(kv[1]))
        a, b = _value(mine), _value(best)
        if lower:
            cells.append(f"{a:.2f} vs {b:.2f} {name} ({100 * (a / b - 1):+.0f}%)")
        else:
            cells.append(f"{a:.0f} vs {b:.0f} {name} ({a - b:+.0f} pts)")
    return cells


def overview(method: str = "beacon") -> str:
    """One table: the method against the best of full attention, truncation and sink+recent."""
    per_task = {t: summary(load(ROOT / t)) for t in ORDER if (ROOT / t / "results.jsonl").exists()}
    lengths = sorted({k[2] for s in per_task.values() for k in s})
    head = "| task | " + " | ".join(f"{L // 1024}K" for L in lengths) + " |"
    lines = [head, "|---|" + "---|" * len(lengths)]
    for task, s in per_task.items():
        lines.append(f"| {task} | " + " | ".join(versus(s, task, lengths, method)) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    intro_path = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "results_intro.md"
    intro = intro_path.read_text() if intro_path.exists() else ""
    # {OVERVIEW:METHOD} in the intro becomes that method's table against the best baseline
    parts = [re.sub(r"\{OVERVIEW:([\w-]+)\}", lambda m: overview(m.group(1)), intro)]
    for task in ORDER:
        folder = ROOT / task
        if not (folder / "results.jsonl").exists():
            continue
        write_report(folder)
        rows = load(folder)
        parts.append(f"## {task}\n")
        parts.append(markdown(rows))
        for png in sorted(folder.glob("*.png")):
            parts.append(f"![{task} {png.stem}](results/{task}/{png.name})\n")
    (ROOT.parent / "results.md").write_text("\n".join(parts))
    print(f"wrote {ROOT.parent / 'results.md'}")


if __name__ == "__main__":
    main()
