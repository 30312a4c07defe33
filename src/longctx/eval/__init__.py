"""Long-context evaluation: tasks, methods at equal KV budget, resumable runs, reports."""

from longctx.eval.runner import parse_lengths, run_eval

__all__ = ["parse_lengths", "run_eval"]
