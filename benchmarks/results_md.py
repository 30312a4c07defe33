"""Assemble docs/results.md from the result folders under docs/results/ (after eval_results.sh)."""

from __future__ import annotations

import sys
from pathlib import Path

from longctx.eval.report import load, markdown, write_report

ROOT = Path(__file__).resolve().parents[1] / "docs" / "results"
ORDER = ["ppl", "passkey", "needle", "kv", "lines", "ruler-multikey", "ruler-vartrack", "ruler-cwe"]


def main() -> None:
    intro = Path(sys.argv[1]).read_text() if len(sys.argv) > 1 else ""
    parts = [intro]
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
