"""Run tasks x methods x lengths into a results folder; resumable (finished items are skipped)."""

from __future__ import annotations

import json
import math
import platform
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from longctx.eval import scoring
from longctx.eval.methods import make_method, parse_methods
from longctx.eval.tasks import build


def parse_lengths(text: str | list) -> list[int]:
    """``4k,8k,16000`` -> [4096, 8192, 16000]."""
    parts = text if isinstance(text, list) else str(text).replace(" ", "").split(",")
    out = []
    for p in parts:
        p = str(p).lower()
        try:
            n = int(float(p[:-1]) * 1024) if p.endswith("k") else int(p)
        except ValueError:
            raise ValueError(f"length {p!r} is not a number of tokens (e.g. 4000, 4k)") from None
        if n < 1:
            raise ValueError(f"length {p!r} must be positive")
        out.append(n)
    return out


# settings every row of a results folder shares; methods, lengths and samples may grow on a rerun
SAME_SETTINGS = ("task", "seed", "window", "ratio", "max_full_length", "model", "adapter")


def _check_same_settings(out: Path, meta: dict[str, Any], has_rows: bool) -> None:
    cfg = out / "config.json"
    if not has_rows or not cfg.exists():
        return
    try:
        before = json.loads(cfg.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"cannot read {cfg}: {e}") from e
    differ = [k for k in SAME_SETTINGS if k in before and before.get(k) != meta.get(k)]
    if differ:
        shown = ", ".join(f"{k}: {before.get(k)!r} -> {meta.get(k)!r}" for k in differ)
        raise ValueError(f"{out} holds results made with other settings ({shown}); use a new --out")


def score(item, text: str) -> float:
    if item.scorer == "all_of":
        return scoring.all_of(text, list(item.answer))
    answers = item.answer if isinstance(item.answer, list) else [item.answer]
    return max(scoring.SCORERS[item.scorer](text, a) for a in answers)


def run_eval(task: str, model, tok, out_dir: str | Path, methods: str = "full,truncate,streaming,beacon",
             lengths: str | list = "4k,8k", samples: int = 4, seed: int = 0, window: int = 1024, ratio: int = 8,
             adapter=None, max_full_length: int | None = None, task_kwargs: dict | None = None,
             config: dict | None = None) -> list[dict[str, Any]]:
    """Evaluate and append one JSON line per (method, item) to ``out_dir/results.jsonl``.

    A rerun into the same folder skips finished items; it is refused if the folder's results
    were made with other settings (task, seed, window, ratio, model, adapter, ...)."""
    from longctx.eval.tasks import TASKS

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {sorted(TASKS)}")
    specs = parse_methods(methods)
    parsed_lengths = parse_lengths(lengths)
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"the output {out} is a file; give a folder")
    path = out / "results.jsonl"
    done = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                done[(r["method"], r["item"])] = r
    meta = {"task": task, "methods": methods, "lengths": parsed_lengths, "samples": samples, "seed": seed,
            "window": window, "ratio": ratio, "max_full_length": max_full_length, "torch": torch.__version__,
            "python": platform.python_version(), **(config or {})}
    _check_same_settings(out, meta, bool(done))
    out.mkdir(parents=True, exist_ok=True)
    try:
        import transformers

        meta["transformers"] = transformers.__version__
    except ImportError:  # pragma: no cover
        pass
    (out / "config.json").write_text(json.dumps(meta, indent=2, default=str))
    rows = list(done.values())
    others: dict[str, Any] = {}

    def model_for(spec):
        if not spec.model:
            return model
        if spec.model not in others:
            from longctx import compat
            from longctx.models import load_model

            weight = compat.embed_tokens(model).weight
            others[spec.model] = load_model(spec.model, dtype=weight.dtype, device=str(weight.device),
                                            with_tokenizer=False)[0]
        return others[spec.model]

    memos: dict[int, dict] = {i: {} for i in range(len(specs))}  # per method, shared across lengths
    # perplexity: longest first, so full attention scores shorter prefixes of a document from one pass
    order = sorted(parse_lengths(lengths), reverse=task == "ppl")
    with path.open("a") as f:
        for length in order:
            items = build(task, tok, length, samples, seed, **(task_kwargs or {}))
            for si, spec in enumerate(specs):
                if spec.kind == "full" and max_full_length and length > max_full_length:
                    continue
                method = label = None
                try:
                    for item in tqdm(items, desc=f"{task} {spec.kind} {length}", leave=False):
                        if method is None:
                            method = make_method(spec, model_for(spec), tok, length, window, ratio, adapter,
                                                 memos[si])
                            label = spec.name or method.label()
                        if (label, item.id) in done:
                            continue
                        t = time.perf_counter()
                        ids = torch.tensor([item.ids])
                        if item.kind == "ppl":
                            nll, n = method.loss(ids, item.tail)
                            row = {"nll": nll, "tokens": n, "ppl": math.exp(nll / max(n, 1)), "score": None}
                        else:
                            new = method.generate(ids, item.max_new_tokens)
                            text = item.answer_prefix + tok.decode(new, skip_special_tokens=True)
                            row = {"output": text, "answer": item.answer, "score": score(item, text)}
                            if item.task == "needle":  # the prompt ends with the fact's opening words, so
                                # ROUGE-L recall of the whole fact is inflated; the exact key word is the score
                                row.update(rouge_l_recall=row["score"], score=scoring.contains(text, item.meta["word"]))
                        row.update(task=item.task, item=item.id, method=label, kind=spec.kind, name=spec.display,
                                   length=length, prompt_tokens=len(item.ids), seconds=time.perf_counter() - t,
                                   **{k: v for k, v in item.meta.items() if isinstance(v, (int, float, str))})
                        if spec.kind.startswith("beacon") and config and "adapter" in config:
                            row["adapter"] = config["adapter"]  # which adapter made this row
                        f.write(json.dumps(row) + "\n")
                        f.flush()
                        done[(label, item.id)] = row
                        rows.append(row)
                finally:
                    if method is not None:
                        method.close()
    return rows
