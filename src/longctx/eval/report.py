"""Tables and plots from a results folder."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from longctx.eval.methods import kinds


def load(out_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(out_dir) / "results.jsonl"
    return disambiguate([json.loads(line) for line in path.read_text().splitlines() if line.strip()])


def disambiguate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Unnamed rows group under their kind (``truncate-1536`` at 4K and ``truncate-2048`` at 8K
    are one ``truncate`` line) unless one item was run by several methods of that kind (say
    ``beacon:2`` and ``beacon:32``): those rows are named by their own label. In place; returns rows."""
    unnamed = [r for r in rows if r.get("name") in (None, "", r["kind"])]
    labels: dict[tuple, set[str]] = defaultdict(set)
    for r in unnamed:
        labels[(r["task"], r["kind"], r["length"], r["item"])].add(r["method"])
    for r in unnamed:
        if len(labels[(r["task"], r["kind"], r["length"], r["item"])]) > 1:
            r["name"] = r["method"]
    return rows


def method_name(r: dict[str, Any]) -> str:
    """The name a row is grouped under: its method's given name, else its kind."""
    return r.get("name") or r["kind"]


def _names(rows: list[dict[str, Any]]) -> list[str]:
    """Method names in a stable order: the built-in kinds first, then named methods as they appear."""
    seen = list(dict.fromkeys(method_name(r) for r in rows))
    order = kinds()
    return [k for k in order if k in seen] + [n for n in seen if n not in order]


def summary(rows: list[dict[str, Any]]) -> dict[tuple[str, str, int], dict[str, float]]:
    """(task, method name, length) -> mean score (accuracy in %) or perplexity, and count."""
    disambiguate(rows)
    groups: dict[tuple, list] = defaultdict(list)
    for r in rows:
        groups[(r["task"], method_name(r), r["length"])].append(r)
    out = {}
    for key, rs in groups.items():
        if rs[0].get("ppl") is not None:
            nll, n = sum(r["nll"] for r in rs), sum(r["tokens"] for r in rs)
            each = [r["ppl"] for r in rs]
            out[key] = {"ppl": math.exp(nll / max(n, 1)), "n": len(rs), "min": min(each), "max": max(each)}
        else:
            k = sum(r["score"] for r in rs)
            lo, hi = wilson(k, len(rs))
            out[key] = {"score": 100 * k / len(rs), "n": len(rs), "lo": 100 * lo, "hi": 100 * hi}
    return out


def wilson(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval (95% by default) of a proportion; partial scores count fractionally."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def recovered_fraction(rows: list[dict[str, Any]], beacon: str = "beacon", nomem: str = "beacon-nomem",
                       full: str = "full") -> dict[int, dict[str, float]]:
    """Per length, how much of the gap between no memory and full attention the memory closes:
    ``(ppl_nomem - ppl_beacon) / (ppl_nomem - ppl_full)``, pooled and per document (min, max)."""
    disambiguate(rows)
    by: dict[tuple[int, str], dict[str, float]] = defaultdict(dict)
    for r in rows:
        if r.get("ppl") is not None and method_name(r) in (beacon, nomem, full):
            by[(r["length"], r["item"])][method_name(r)] = r["ppl"]
    s = summary([r for r in rows if r.get("ppl") is not None])
    out = {}
    for L in sorted({k[0] for k in by}):
        docs = [v for (length, _), v in by.items() if length == L and len(v) == 3]
        if not docs:
            continue
        task = next(r["task"] for r in rows if r["length"] == L and r.get("ppl") is not None)
        pooled = [s[(task, m, L)]["ppl"] for m in (nomem, beacon, full)]
        each = [(d[nomem] - d[beacon]) / (d[nomem] - d[full]) for d in docs if d[nomem] != d[full]]
        if pooled[0] == pooled[2] or not each:
            continue
        out[L] = {"recovered": (pooled[0] - pooled[1]) / (pooled[0] - pooled[2]), "min": min(each), "max": max(each),
                  "documents": len(docs), "ppl_nomem": pooled[0], "ppl_beacon": pooled[1], "ppl_full": pooled[2]}
    return out


def _cell(v: dict[str, float] | None) -> str:
    if v is None:
        return "-"
    if "ppl" in v:
        spread = f" [{v['min']:.1f}-{v['max']:.1f}]" if v["n"] > 1 else ""
        return f"{v['ppl']:.2f}{spread} ({v['n']} docs)"
    return f"{v['score']:.0f} [{v['lo']:.0f}-{v['hi']:.0f}] (n={v['n']})"


def markdown(rows: list[dict[str, Any]]) -> str:
    s = summary(rows)
    tasks = sorted({k[0] for k in s})
    kinds = _names(rows)
    lengths = sorted({k[2] for k in s})
    labels = {(method_name(r), r["length"]): r["method"] for r in rows}
    lines = []
    for task in tasks:
        metric = "perplexity (lower is better)" if any("ppl" in v for k, v in s.items() if k[0] == task) else "score % (higher is better)"
        lines.append(f"\n**{task}**: {metric}\n")
        lines.append("| method | " + " | ".join(f"{L // 1024}K" if L % 1024 == 0 else str(L) for L in lengths) + " |")
        lines.append("|---|" + "---|" * len(lengths))
        for kind in kinds:
            cells = []
            for L in lengths:
                cells.append(_cell(s.get((task, kind, L))))
            lines.append(f"| {kind} | " + " | ".join(cells) + " |")
        names = {k: ", ".join(f"{labels[(k, L)]} at {L}" for L in lengths if (k, L) in labels) for k in kinds}
        notes = [f"{k}: {v}" for k, v in names.items()
                 if k != "full" and any(labels[(k, L)] != k for L in lengths if (k, L) in labels)]
        lines.append("\n" + "; ".join(notes) + "\n")
        rf = recovered_fraction([r for r in rows if r["task"] == task])
        if rf:
            lines.append("recovered fraction (ppl_nomem - ppl_beacon) / (ppl_nomem - ppl_full), pooled "
                         "[per-document min-max]: " + "; ".join(
                             f"{L // 1024 if L % 1024 == 0 else L}{'K' if L % 1024 == 0 else ''}: {v['recovered']:+.2f} "
                             f"[{v['min']:+.2f}, {v['max']:+.2f}] ({v['documents']} docs)" for L, v in rf.items()) + "\n")
        lines.append("intervals: accuracy 95% Wilson; perplexity [lowest-highest document]\n")
    return "\n".join(lines) + "\n"


def plots(rows: list[dict[str, Any]], out_dir: str | Path) -> list[Path]:
    """Metric against length per method; accuracy against depth/position; needle heatmaps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    made = []
    s = summary(rows)
    for task in sorted({k[0] for k in s}):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for kind in _names(rows):
            pts = sorted((k[2], v) for k, v in s.items() if k[0] == task and k[1] == kind)
            if pts:
                ys = [v.get("ppl", v.get("score")) for _, v in pts]
                ax.plot([p[0] for p in pts], ys, marker="o", label=kind)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("context length (tokens)")
        is_ppl = any("ppl" in v for k, v in s.items() if k[0] == task)
        ax.set_ylabel("perplexity" if is_ppl else "score (%)")
        if is_ppl:
            ax.set_yscale("log")
        ax.set_title(task)
        ax.legend()
        fig.tight_layout()
        p = out / f"{task}_by_length.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        made.append(p)
    by_pos = [r for r in rows if "depth" in r or "position" in r]
    for task in sorted({r["task"] for r in by_pos}):
        rs = [r for r in by_pos if r["task"] == task]
        key = "depth" if "depth" in rs[0] else "position"
        kinds = _names(rs)
        lengths = sorted({r["length"] for r in rs})
        depths = sorted({round(r[key], 2) for r in rs})
        fig, axes = plt.subplots(1, len(kinds), figsize=(3.2 * len(kinds), 3), squeeze=False)
        for ax, kind in zip(axes[0], kinds):
            grid = [[float("nan")] * len(lengths) for _ in depths]
            for i, d in enumerate(depths):
                for j, L in enumerate(lengths):
                    cell = [r["score"] for r in rs if method_name(r) == kind and r["length"] == L and round(r[key], 2) == d]
                    if cell:
                        grid[i][j] = 100 * sum(cell) / len(cell)
            im = ax.imshow(grid, vmin=0, vmax=100, cmap="RdYlGn", aspect="auto", origin="lower")
            ax.set_xticks(range(len(lengths)), [f"{L // 1024}K" for L in lengths])
            ax.set_yticks(range(len(depths)), [f"{d:.2f}" for d in depths])
            ax.set_title(kind)
            ax.set_xlabel("length")
            ax.set_ylabel(key)
        fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
        p = out / f"{task}_by_{key}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        made.append(p)
    return made


def write_report(out_dir: str | Path) -> Path:
    rows = load(out_dir)
    out = Path(out_dir)
    md = markdown(rows)
    pngs = plots(rows, out)
    text = md + "\n" + "\n".join(f"![{p.stem}]({p.name})" for p in pngs) + "\n"
    (out / "report.md").write_text(text)
    (out / "summary.json").write_text(json.dumps({"|".join(map(str, k)): v for k, v in summary(rows).items()}, indent=2))
    return out / "report.md"
