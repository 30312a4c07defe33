"""Released Activation Beacon checkpoints, as published: synthetic replicas of their config.json
field sets (tiny weights, sharded layout as `save_pretrained` writes it) convert and run, and
what longctx cannot represent is refused with the field named (docs/convert.md has the table)."""

from __future__ import annotations

import json
import os
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

from longctx import BeaconAdapter, BeaconConfig, BeaconModel
from longctx.beacon.convert import ConversionError, import_reference

from tiny import perturb_adapter, tiny_model

# beacon fields as each generation of the reference code writes them (values: the released
# recipes' settings, window shrunk to the tiny model)
OFFICIAL_V2 = dict(beacon_window=16, beacon_stride=16, beacon_attn="step-expansion", beacon_ratio=[2, 4, 8],
                   beacon_ratio_mix="step-random", beacon_param=["q", "k", "v", "o"], beacon_embed_init="eos",
                   beacon_sink_size=1, beacon_attend_prev=True, beacon_pos="interleave", beacon_parallel_window=1)
RELEASES = {
    # first release (Llama-2-7B-chat, old code): stride as a list, attend_previous, retrieval fields
    "llama2-v1": ("llama", dict(beacon_window=16, beacon_stride=[16], beacon_stride_mix="step-random",
                                beacon_attn="step-expansion", beacon_attend_previous=True,
                                beacon_ratio=[2, 2, 4, 8, 16], beacon_ratio_mix="step-random",
                                beacon_param=["q", "k", "v", "o"], retrieval_method=None, retrieval_topk=None)),
    "llama2-v2-ft": ("llama", OFFICIAL_V2),
    "llama2-v2-pt": ("llama", {**OFFICIAL_V2, "beacon_ratio": [2, 4, 8, 16]}),
    "mistral-v2-ft": ("mistral", {**OFFICIAL_V2, "beacon_attend_prev": False}),
    "llama3-v2-ft": ("llama", OFFICIAL_V2),
    "qwen2-code-defaults": ("qwen2", dict(beacon_window=16, beacon_stride=16, beacon_attn="full-coverage",
                                          beacon_ratio=[2, 4, 8, 16], beacon_ratio_mix="step-random",
                                          beacon_param=["q", "k", "v"], beacon_embed_init="eos", beacon_sink_size=0,
                                          beacon_attend_prev=True, beacon_pos="interleave",
                                          beacon_parallel_window=1)),
    # descendants of the official code (MemoRAG / LycheeMemory style): ratio 4, adapt-K, extra switches off
    "memorag-style": ("qwen2", dict(beacon_window=16, beacon_stride=16, beacon_attn="full-coverage", beacon_ratio=[4],
                                    beacon_ratio_mix="adapt-64", beacon_param=["q", "k", "v"], beacon_embed_init="eos",
                                    beacon_sink_size=0, beacon_attend_prev=True, beacon_pos="interleave",
                                    beacon_parallel_window=1, enable_beacon=True, beacon_accum=True,
                                    beacon_cache=None, beacon_avg_init=False, beacon_avg=False,
                                    beacon_self_occurrence=False, retrieval_method=None, retrieval_topk=2,
                                    retrieval_key_length=None)),
}


def _params(fields):
    return fields.get("beacon_param", ["q", "k", "v"])


def make_release(tmp_path, name, shard="40KB", tokenizer=True):
    """A reference checkpoint folder: sharded base weights, one more shard for the beacon tensors,
    the index listing both, and the release's config fields."""
    family, fields = RELEASES[name]
    model = tiny_model(family)
    ref = tmp_path / f"ref-{name}"
    model.save_pretrained(ref, max_shard_size=shard)
    cfg = BeaconConfig(window=16, ratios=[4], projections=_params(fields))
    adapter = perturb_adapter(BeaconAdapter.from_model(model, cfg))
    beacon = {"model.beacon_embed_tokens.weight": adapter.embed.detach().clone()}
    for i, projs in enumerate(adapter.layers):
        for p, lin in projs.items():
            beacon[f"model.layers.{i}.self_attn.beacon_{p}_proj.weight"] = lin.weight.detach().clone()
            if lin.bias is not None:
                beacon[f"model.layers.{i}.self_attn.beacon_{p}_proj.bias"] = lin.bias.detach().clone()
    index_path = ref / "model.safetensors.index.json"
    if index_path.exists():
        index = json.loads(index_path.read_text())
    else:  # not sharded: turn the single file into a one-shard index
        os.replace(ref / "model.safetensors", ref / "model-00001-of-00001.safetensors")
        index = {"metadata": {}, "weight_map": {k: "model-00001-of-00001.safetensors"
                                                for k in load_file(str(ref / "model-00001-of-00001.safetensors"))}}
    save_file(beacon, str(ref / "model-beacon.safetensors"), metadata={"format": "pt"})
    index["weight_map"].update(dict.fromkeys(beacon, "model-beacon.safetensors"))
    index_path.write_text(json.dumps(index))
    conf = json.loads((ref / "config.json").read_text())
    conf.update(fields)
    conf["auto_map"] = {"AutoModelForCausalLM": "modeling_beacon.BeaconForCausalLM"}
    conf["custom_pipelines"] = {"beacon": {"impl": "pipeline.BeaconPipeline"}}
    (ref / "config.json").write_text(json.dumps(conf))
    if tokenizer:
        (ref / "tokenizer_config.json").write_text(json.dumps({"auto_map": {"AutoTokenizer": ["x.Tok", None]},
                                                               "model_max_length": 512}))
        (ref / "special_tokens_map.json").write_text("{}")
    return model, adapter, ref


def _base(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


@pytest.mark.parametrize("name", sorted(RELEASES))
def test_release_replica_converts_and_runs(tmp_path, name):
    model, adapter, ref = make_release(tmp_path, name)
    assert len(list(ref.glob("model-*.safetensors"))) >= 3  # sharded base + beacon shard
    (ref / "optimizer_extra.safetensors").write_bytes(b"junk that is not part of the model")
    out = import_reference(ref, tmp_path / "converted", write_base=True)
    base_shards = sorted(p.name for p in (out / "base").glob("model-*.safetensors"))
    assert len(base_shards) == len(list(ref.glob("model-*.safetensors"))) - 1  # as the input, less the beacon shard
    base = _base(out / "base")
    imported = BeaconAdapter.load(out, base)
    fields = RELEASES[name][1]
    assert imported.config.window == 16 and imported.config.projections == _params(fields)
    assert imported.config.attend_prev == fields.get("beacon_attend_prev", fields.get("beacon_attend_previous", True))
    ids = torch.randint(3, 128, (1, 50))
    with torch.no_grad():
        adapter.config = imported.config
        a = BeaconModel(model, adapter=adapter)(ids).logits
        b = BeaconModel(base, adapter=imported)(ids).logits
    assert torch.equal(a, b)
    conf = json.loads((out / "base" / "config.json").read_text())
    assert not {"auto_map", "custom_pipelines", "enable_beacon", "retrieval_method"} & set(conf)
    assert not any(k.startswith("beacon_") for k in conf)
    assert "auto_map" not in json.loads((out / "base" / "tokenizer_config.json").read_text())
    assert not (out / "base" / "optimizer_extra.safetensors").exists()


@pytest.mark.parametrize("change,match", [
    (dict(beacon_parallel_window=2), "beacon_parallel_window=2"),
    (dict(enable_beacon=False), "enable_beacon=False"),
    (dict(beacon_accum=False), "beacon_accum"),
    (dict(beacon_cache="8_8__8_8"), "beacon_cache"),
    (dict(beacon_avg=True), "beacon_avg=True"),
    (dict(beacon_avg_init=True), "beacon_avg_init"),
    (dict(beacon_self_occurrence=True), "beacon_self_occurrence"),
    (dict(retrieval_method="bm25"), "retrieval_method"),
    (dict(beacon_attend_prev="false"), "beacon_attend_prev='false'"),
    (dict(beacon_attend_prev=1), "beacon_attend_prev=1"),
    (dict(beacon_ratio="48"), "beacon_ratio"),
    (dict(beacon_ratio=[2.7]), "beacon_ratio"),
    (dict(beacon_sink_size=1.5), "beacon_sink_size"),
    (dict(beacon_window="16"), "beacon_window"),
    (dict(beacon_stride=[16, 32]), "several strides"),
    (dict(beacon_stride=8), "beacon_stride"),
    (dict(beacon_param=[]), "beacon_param"),
    (dict(beacon_attn="magic"), "beacon_attn"),
    (dict(beacon_pos="sideways"), "placement"),
])
def test_release_settings_that_change_the_algorithm_are_refused(tmp_path, change, match):
    _, _, ref = make_release(tmp_path, "memorag-style")
    conf = json.loads((ref / "config.json").read_text())
    conf.update(change)
    (ref / "config.json").write_text(json.dumps(conf))
    with pytest.raises(ConversionError, match=match):
        import_reference(ref, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unknown_beacon_field_warns_and_converts(tmp_path):
    _, _, ref = make_release(tmp_path, "llama2-v2-ft")
    conf = json.loads((ref / "config.json").read_text())
    conf["beacon_future_switch"] = 3
    (ref / "config.json").write_text(json.dumps(conf))
    with pytest.warns(UserWarning, match="beacon_future_switch"):
        import_reference(ref, tmp_path / "out")


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("where", ["same", "inside"])
def test_output_in_the_checkpoint_is_refused_and_the_checkpoint_kept(tmp_path, where):
    _, _, ref = make_release(tmp_path, "qwen2-code-defaults")
    before = _snapshot(ref)
    out = ref if where == "same" else ref / "converted"
    with pytest.raises(ConversionError, match="outside the reference checkpoint"):
        import_reference(ref, out, write_base=True)
    assert _snapshot(ref) == before


def test_existing_output_needs_force(tmp_path):
    _, _, ref = make_release(tmp_path, "qwen2-code-defaults")
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConversionError, match="--force"):
        import_reference(ref, out)
    assert (out / "notes.txt").read_text() == "mine"
    import_reference(ref, out, force=True)
    assert (out / "adapter_config.json").exists() and not (out / "notes.txt").exists()


def test_tokenizer_link_outside_the_checkpoint_is_refused(tmp_path):
    _, _, ref = make_release(tmp_path, "qwen2-code-defaults")
    secret = tmp_path / "secret.txt"
    secret.write_text("not for copying")
    (ref / "tokenizer.json").symlink_to(secret)
    with pytest.raises(ConversionError, match="outside the checkpoint"):
        import_reference(ref, tmp_path / "out", write_base=True)
    assert not (tmp_path / "out").exists()


def test_hub_cache_links_are_followed(tmp_path):
    """The hub cache keeps files as blobs and links snapshots/<rev>/name to ../../blobs/<hash>."""
    _, _, built = make_release(tmp_path, "qwen2-code-defaults")
    repo = tmp_path / "models--org--beacon"
    snap = repo / "snapshots" / "abc123"
    (repo / "blobs").mkdir(parents=True)
    snap.mkdir(parents=True)
    for f in built.iterdir():
        blob = repo / "blobs" / f"h-{f.name}"
        os.replace(f, blob)
        (snap / f.name).symlink_to(os.path.relpath(blob, snap))
    (repo / "blobs" / "tok").write_text('{"version": "1.0"}')
    (snap / "tokenizer.json").symlink_to("../../blobs/tok")
    out = import_reference(snap, tmp_path / "out", write_base=True)
    assert (out / "base" / "tokenizer.json").read_text() == '{"version": "1.0"}'
    assert not (out / "base" / "tokenizer.json").is_symlink()


@pytest.mark.parametrize("damage,match", [
    ("nan", "non-finite"), ("shape", "has shape"), ("extra_layer", "does not exist"), ("missing", "has no beacon_k_proj"),
])
def test_damaged_beacon_tensors_are_refused(tmp_path, damage, match):
    _, _, ref = make_release(tmp_path, "qwen2-code-defaults")
    path = ref / "model-beacon.safetensors"
    t = load_file(str(path))
    key = "model.layers.1.self_attn.beacon_k_proj.weight"
    if damage == "nan":
        t[key][0, 0] = float("nan")
    elif damage == "shape":
        t[key] = t[key][:-1]
    elif damage == "extra_layer":
        t["model.layers.7.self_attn.beacon_k_proj.weight"] = t[key].clone()
    else:
        del t[key]
    save_file(t, str(path))
    index = json.loads((ref / "model.safetensors.index.json").read_text())
    index["weight_map"] = {k: v for k, v in index["weight_map"].items() if v != "model-beacon.safetensors"}
    index["weight_map"].update(dict.fromkeys(t, "model-beacon.safetensors"))
    (ref / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ConversionError, match=match):
        import_reference(ref, tmp_path / "out", write_base=True)
    assert not (tmp_path / "out").exists()


def test_missing_head_count_is_refused_before_anything_is_written(tmp_path):
    _, _, ref = make_release(tmp_path, "qwen2-code-defaults")
    conf = json.loads((ref / "config.json").read_text())
    del conf["num_attention_heads"]
    (ref / "config.json").write_text(json.dumps(conf))
    with pytest.raises(ConversionError, match="num_attention_heads"):
        import_reference(ref, tmp_path / "out", write_base=True)
    assert not (tmp_path / "out").exists()


def test_index_naming_a_file_outside_is_refused(tmp_path):
    _, _, ref = make_release(tmp_path, "qwen2-code-defaults")
    index = json.loads((ref / "model.safetensors.index.json").read_text())
    first = next(iter(index["weight_map"]))
    index["weight_map"][first] = "../elsewhere.safetensors"
    (ref / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ConversionError, match="outside its folder"):
        import_reference(ref, tmp_path / "out")


def test_crash_during_conversion_leaves_the_previous_output(tmp_path, monkeypatch):
    from longctx.beacon import convert

    _, _, ref = make_release(tmp_path, "qwen2-code-defaults")
    out = import_reference(ref, tmp_path / "out", write_base=True)
    before = _snapshot(out)

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(convert, "_write_plain_model", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        import_reference(ref, out, write_base=True, force=True)
    assert _snapshot(out) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        BeaconAdapter.load(out, _base(out / "base"))
