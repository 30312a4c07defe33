"""How much of the pass key a method recovers, beyond exact matches (issue 12's curve).

Reads eval ``results.jsonl`` files of the passkey task and prints, per file, method and length:
exact accuracy, the share of answers whose first digit is right (chance 1/9 for keys
10000-99999) and the mean number of leading digits right.

    .venv/bin/python benchmarks/passkey_digits.py docs/results/memory/*/passkey-r4/results.jsonl
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from pathlib import Path


def leading(answer: str, output: str) -> int:
    """Leading digits of ``answer`` matched by the first number in ``output``."""
    m = re.search(r"\d+", output)
    got = m.group(0) if m else ""
    n = 0
    while n < min(len(got), len(answer)) and got[n] == answer[n]:
        n += 1
    return n


def main(paths: list[str]) -> None:
    print("| results | method | length | n | exact % | first digit % | leading digits (mean of 5) |")
    print("|---|---|---|---|---|---|---|")
    for p in paths:
        cells = defaultdict(list)
        for line in Path(p).read_text().splitlines():
            r = json.loads(line)
            if r.get("task") == "passkey":
                cells[(r["method"], r["length"])].append(r)
        for (method, length), rows in sorted(cells.items()):
            lead = [leading(r["answer"], r["output"]) for r in rows]
            exact = sum(r["score"] for r in rows) / len(rows)
            first = sum(x >= 1 for x in lead) / len(rows)
            print(f"| {Path(p).parent.parent.name}/{Path(p).parent.name} | {method} | {length} | {len(rows)} | "
                  f"{100 * exact:.0f} | {100 * first:.0f} | {sum(lead) / len(lead):.2f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
