"""Evaluation harness: generators, scorers, methods at equal budget, resumable runs."""

from __future__ import annotations

import json

import pytest
import torch

from longctx.eval import run_eval, scoring
from longctx.eval.methods import Streaming, Truncate, beacon_budget, parse_methods
from longctx.eval.report import write_report
from longctx.eval.tasks import build
from longctx.synthetic import fill, insert_at_depths

from tiny import tiny_model


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from longctx.models import smollm2_dir

    return AutoTokenizer.from_pretrained(smollm2_dir())


def test_scorers_on_hand_made_cases():
    assert scoring.exact_match("The Pequod.", "the pequod") == 1.0
    assert scoring.contains("the key is 71432 indeed", "71432") == 1.0
    assert scoring.contains("the key is 7143", "71432") == 0.0
    assert scoring.f1("Captain Ahab hunts", "Ahab hunts the whale") == pytest.approx(2 * (2 / 3) * (2 / 3) / (4 / 3))
    assert scoring.rouge_l_recall("the chowder secret is clams", "secret ingredient is clams") == pytest.approx(3 / 4)
    assert scoring.all_of("V1 and V3", ["V1", "V2", "V3", "V4"]) == 0.5


def test_insert_lands_at_sentence_boundary_nearest_the_depth():
    sentences = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
    filler, bounds = fill(sentences, 100)
    out, offs = insert_at_depths(filler, bounds, [(0.5, [99, 98])])
    assert out[offs[0] : offs[0] + 2] == [99, 98]
    assert abs(offs[0] - 50) <= 4 and offs[0] in bounds


@pytest.mark.parametrize("task", ["passkey", "needle"])
def test_needle_is_at_the_depth_asked(tok, task):
    items = build(task, tok, 2048, 5, seed=1)
    assert len(items) == 5
    for item in items:
        ctx = item.meta.get("context_tokens") or len(item.ids)
        depth_tokens = item.meta["needle_offset"] - (len(item.ids) - ctx if "context_tokens" in item.meta else 0)
        assert abs(len(item.ids) - 2048) <= 2
        # within one filler sentence of the asked depth (sentences here are < 60 tokens)
        assert abs(depth_tokens - item.meta["depth"] * ctx) <= 60
    text = tok.decode(items[2].ids[items[2].meta["needle_offset"] :][:20])
    assert ("pass key" in text) if task == "passkey" else ("secret ingredient" in text)


@pytest.mark.parametrize("task", ["passkey", "needle", "lines", "kv", "ruler-multikey", "ruler-multivalue",
                                  "ruler-vartrack", "ruler-cwe", "ruler-fwe", "ppl"])
def test_same_seed_same_task_and_lengths_fit(tok, task):
    a = build(task, tok, 2048, 2, seed=3)
    b = build(task, tok, 2048, 2, seed=3)
    c = build(task, tok, 2048, 2, seed=4)
    assert [x.ids for x in a] == [x.ids for x in b]
    assert all(len(x.ids) <= 2048 + 2 for x in a)
    if task != "ppl":
        assert [x.ids for x in a] != [x.ids for x in c]
        for x in a:  # the answer is really in the prompt
            answers = x.answer if isinstance(x.answer, list) else [x.answer.split(" is ")[-1].rstrip(".")]
            assert all(ans in tok.decode(x.ids) for ans in answers)


def test_lines_and_kv_positions(tok):
    items = build("kv", tok, 2048, 3, seed=0)
    assert [round(i.meta["position"], 2) for i in items] == [0.0, 0.5, 1.0]
    items = build("lines", tok, 2048, 3, seed=0)
    assert [round(i.meta["position"], 1) for i in items] == [0.0, 0.5, 1.0]


def test_streaming_holds_exactly_the_budget():
    model = tiny_model("llama")
    m = Streaming(model, None, budget=40, sink=4, chunk=16)
    m.reset()
    with torch.no_grad():
        m._feed(torch.randint(3, 128, (1, 100)))
    from longctx import compat

    assert all(k.shape[2] == 40 for k, _ in compat.cache_kv(m.cache))
    assert m.held == 40


def test_streaming_with_room_equals_full_attention():
    model = tiny_model("qwen2")
    ids = torch.randint(3, 128, (1, 60))
    s = Streaming(model, None, budget=500, sink=4, chunk=16)
    t = Truncate(model, None, budget=500, chunk=16)
    with torch.no_grad():
        full = torch.nn.functional.cross_entropy(model(ids).logits[0, 39:59].float(), ids[0, 40:], reduction="sum")
    assert abs(s.loss(ids, 20)[0] - full.item()) < 1e-3
    assert abs(t.loss(ids, 20)[0] - full.item()) < 1e-3


def test_streaming_evicts_middle_tokens():
    """With a small budget, changing a token just after the sink must not change late losses."""
    model = tiny_model("llama")
    ids = torch.randint(3, 128, (1, 80))
    other = ids.clone()
    other[0, 6] = (other[0, 6] + 1) % 128
    s = Streaming(model, None, budget=24, sink=4, chunk=8)
    assert abs(s.loss(ids, 8)[0] - s.loss(other, 8)[0]) < 1e-4


def test_budget_and_method_parsing():
    assert beacon_budget(8192, 1024, 8) == 7 * 128 + 1024 + 128
    specs = parse_methods("full,truncate:4096,streaming,beacon:adapt-1024")
    assert [s.kind for s in specs] == ["full", "truncate", "streaming", "beacon"]
    assert specs[1].budget == 4096 and specs[3].ratio == "adapt-1024"
    with pytest.raises(ValueError, match="unknown method"):
        parse_methods("magic")
    named = parse_methods("full, cream=full@runs/c/model, cream+beacon=beacon:16@runs/c/model")
    assert [(s.display, s.kind, s.model) for s in named] == [
        ("full", "full", None), ("cream", "full", "runs/c/model"), ("cream+beacon", "beacon", "runs/c/model")]
    assert named[2].ratio == 16
    with pytest.raises(ValueError, match="distinct names"):
        parse_methods("full,full@runs/c/model")


def test_methods_on_other_models_side_by_side(tok, tmp_path):
    """``NAME=KIND@PATH`` loads a second model (e.g. context-extended) and labels its rows."""
    model = tiny_model("llama", vocab_size=len(tok), max_position_embeddings=4096)
    other = tiny_model("llama", vocab_size=len(tok), max_position_embeddings=4096, seed=1)
    other.save_pretrained(tmp_path / "other")
    docs = {"documents": [("doc", "Call me Ishmael. " * 800)]}
    rows = run_eval("ppl", model, tok, tmp_path / "r", methods=f"full,ext=full@{tmp_path / 'other'},"
                    f"ext+beacon=beacon:8@{tmp_path / 'other'}", lengths="1k", samples=1, window=256,
                    task_kwargs=docs)
    by = {r["method"]: r for r in rows}
    assert set(by) == {"full", "ext", "ext+beacon"} and by["ext"]["kind"] == "full"
    assert by["ext"]["nll"] != pytest.approx(by["full"]["nll"])  # really another model
    alone = run_eval("ppl", other, tok, tmp_path / "alone", methods="full", lengths="1k", samples=1, window=256,
                     task_kwargs=docs)
    assert by["ext"]["nll"] == pytest.approx(alone[0]["nll"], rel=1e-5)
    text = write_report(tmp_path / "r").read_text()
    assert "| ext |" in text and "| ext+beacon |" in text


def test_run_is_resumable_and_reports(tok, tmp_path):
    model = tiny_model("llama", vocab_size=len(tok), max_position_embeddings=4096)
    kw = dict(methods="full,truncate,streaming,beacon", lengths="1k", samples=2, window=256, ratio=8,
              config={"adapter": "copy-initialised"})
    rows = run_eval("passkey", model, tok, tmp_path, **kw)
    assert len(rows) == 8 and {r["kind"] for r in rows} == {"full", "truncate", "streaming", "beacon"}
    assert {r.get("adapter") for r in rows if r["kind"] == "beacon"} == {"copy-initialised"}  # provenance
    assert all("adapter" not in r for r in rows if r["kind"] != "beacon")
    lines_before = (tmp_path / "results.jsonl").read_text().splitlines()
    rows2 = run_eval("passkey", model, tok, tmp_path, **kw)
    assert (tmp_path / "results.jsonl").read_text().splitlines() == lines_before  # nothing recomputed
    assert len(rows2) == 8
    run_eval("ppl", model, tok, tmp_path / "ppl", methods="full,beacon", lengths="1k", samples=1, window=256,
             task_kwargs={"documents": [("doc", "Call me Ishmael. " * 800)]})
    report = write_report(tmp_path)
    assert "passkey" in report.read_text() and (tmp_path / "passkey_by_length.png").exists()
    assert json.loads((tmp_path / "config.json").read_text())["task"] == "passkey"


def test_longbench_reader_and_scoring(tok, tmp_path):
    path = tmp_path / "hotpotqa.jsonl"
    rows = [{"context": "Paris is the capital of France. " * 300, "input": "What is the capital of France?",
             "answers": ["Paris"]},
            {"context": "short context", "input": "Who?", "answers": ["Ahab", "Captain Ahab"]}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    items = build("longbench", tok, 1024, 5, seed=0, data=str(path))
    assert len(items) == 2 and items[0].scorer == "f1" and items[0].task == "longbench-hotpotqa"
    assert len(items[0].ids) <= 1024 and "capital of France?" in tok.decode(items[0].ids[-40:])
    from longctx.eval.runner import score

    assert score(items[1], "Captain Ahab.") == 1.0 and score(items[1], "It was Captain Ahab.") == pytest.approx(2 / 3)
    assert 0 < score(items[0], "The answer is Paris, France") < 1
    with pytest.raises(ValueError, match="--data"):
        build("longbench", tok, 1024, 1, seed=0)


def test_full_attention_scores_a_prefix_from_the_longer_pass():
    """Perplexity at a shorter length reuses the longer pass: same numbers as a fresh forward."""
    from longctx.eval.methods import Full

    model = tiny_model("llama")
    ids = torch.randint(3, 128, (1, 300))
    memo: dict = {}
    long = Full(model, None, memo=memo)
    long.loss(ids, 100)
    calls = []
    hook = model.model.register_forward_hook(lambda *a: calls.append(1))
    short = Full(model, None, memo=memo).loss(ids[:, :200], 50)
    assert not calls  # no forward for the prefix
    fresh = Full(model, None).loss(ids[:, :200], 50)
    hook.remove()
    assert short[1] == fresh[1] == 50 and short[0] == pytest.approx(fresh[0], rel=1e-5)
    other = ids.clone()
    other[0, 10] += 1  # not a prefix any more: recomputed
    assert Full(model, None, memo=memo).loss(other[:, :200], 50)[0] != pytest.approx(short[0], rel=1e-6)


def test_report_keeps_ratios_of_one_kind_apart_but_budgets_by_length_together():
    from longctx.eval.report import summary

    def row(method, kind, length, item, score):
        return {"task": "passkey", "method": method, "kind": kind, "name": kind, "length": length, "item": item,
                "score": score}

    rows = [row("beacon-2", "beacon", 8192, "a", 1.0), row("beacon-32", "beacon", 8192, "a", 0.0),
            row("truncate-1536", "truncate", 4096, "b", 1.0), row("truncate-2048", "truncate", 8192, "a", 0.0)]
    s = summary(rows)
    assert s[("passkey", "beacon-2", 8192)]["score"] == 100 and s[("passkey", "beacon-32", 8192)]["score"] == 0
    assert ("passkey", "beacon", 8192) not in s  # two ratios on one item are not pooled
    assert {k[1] for k in s if k[1].startswith("trunc")} == {"truncate"}  # one line across lengths


def test_a_registered_method_is_a_kind_of_the_harness():
    from longctx.eval import methods

    @methods.register
    class Echo(methods.Method):
        name = kind = "echo-test"
        arg = "budget"

        def __init__(self, budget):
            self.budget = budget

        @classmethod
        def build(cls, spec, setting):
            return cls(spec.budget or setting.length)

    try:
        assert "echo-test" in methods.kinds()
        (spec,) = parse_methods("echo-test:64")
        made = methods.make_method(spec, None, None, 100, 16, 4)
        assert isinstance(made, Echo) and made.budget == 64
        with pytest.raises(ValueError, match="budget must be a positive integer"):
            parse_methods("echo-test:x")
    finally:
        del methods.METHODS["echo-test"]
    assert methods.kinds() == ("full", "truncate", "streaming", "beacon", "beacon-nomem")
