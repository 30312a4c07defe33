"""Import/export of reference-format checkpoints built from tiny random models."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from longctx import BeaconAdapter, BeaconConfig, BeaconModel
from longctx.beacon.convert import ConversionError, export_reference, import_reference

from tiny import perturb_adapter, tiny_model

REF_CONFIGS = {
    # interleave + full-coverage (Mistral / Qwen2 releases); append + step-expansion (Llama-2 first release)
    "llama": dict(window=16, ratios=[2, 4, 8], ratio_mix="step-random", placement="append", scheme="step-expansion",
                  projections=["q", "k", "v", "o"], attend_prev=True),
    "mistral": dict(window=16, ratios=[4], ratio_mix="fixed", projections=["q", "k", "v", "o"], sink=1),
    "qwen2": dict(window=16, ratios=[2, 4], ratio_mix="step-random", projections=["q", "k", "v"]),
}


def make_reference_checkpoint(tmp_path, family):
    """A whole model dir in the reference layout: base weights + beacon tensors + beacon_* config."""
    model = tiny_model(family)
    adapter = perturb_adapter(BeaconAdapter.from_model(model, BeaconConfig(**REF_CONFIGS[family])))
    ref = tmp_path / f"ref-{family}"
    model.save_pretrained(ref)
    tensors = load_file(str(ref / "model.safetensors"))
    tensors["model.beacon_embed_tokens.weight"] = adapter.embed.detach().clone()
    for i, projs in enumerate(adapter.layers):
        for p, lin in projs.items():
            tensors[f"model.layers.{i}.self_attn.beacon_{p}_proj.weight"] = lin.weight.detach().clone()
            if lin.bias is not None:
                tensors[f"model.layers.{i}.self_attn.beacon_{p}_proj.bias"] = lin.bias.detach().clone()
    save_file(tensors, str(ref / "model.safetensors"), metadata={"format": "pt"})
    cfg = json.loads((ref / "config.json").read_text())
    c = adapter.config
    cfg.update(beacon_window=c.window, beacon_stride=c.window, beacon_attn=c.scheme, beacon_ratio=c.ratios,
               beacon_ratio_mix=c.ratio_mix, beacon_param=c.projections, beacon_embed_init="eos",
               beacon_sink_size=c.sink, beacon_attend_prev=c.attend_prev, beacon_pos=c.placement,
               beacon_parallel_window=1, auto_map={"AutoModelForCausalLM": "modeling_beacon.BeaconForCausalLM"})
    (ref / "config.json").write_text(json.dumps(cfg))
    return model, adapter, ref, tensors


@pytest.mark.parametrize("family", sorted(REF_CONFIGS))
def test_import_runs_and_export_round_trips(tmp_path, family):
    model, adapter, ref, ref_tensors = make_reference_checkpoint(tmp_path, family)
    out = import_reference(ref, tmp_path / "adapter", write_base=True)
    base, _ = _load_base(out / "base")
    imported = BeaconAdapter.load(out, base)
    assert imported.config == adapter.config
    ids = torch.randint(3, 128, (1, 60))
    with torch.no_grad():
        a = BeaconModel(model, adapter=adapter)(ids).logits
        b = BeaconModel(base, adapter=imported)(ids).logits
    assert torch.equal(a, b)
    # export back: the same tensors and the same beacon fields
    base2, _ = _load_base(out / "base")
    again = BeaconAdapter.load(out, base2)
    exp = export_reference(again, base2, tmp_path / "exported")
    back = load_file(str(exp / "model.safetensors"))
    assert sorted(back) == sorted(ref_tensors)
    assert all(torch.equal(back[k], ref_tensors[k]) for k in ref_tensors)
    cfg = json.loads((exp / "config.json").read_text())
    ref_cfg = json.loads((ref / "config.json").read_text())
    assert {k: v for k, v in cfg.items() if k.startswith("beacon_")} == \
           {k: v for k, v in ref_cfg.items() if k.startswith("beacon_")}


def _load_base(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval(), None


@pytest.mark.parametrize("change,match", [
    (dict(beacon_stride=8), "beacon_stride"),
    (dict(beacon_attn="magic"), "beacon_attn"),
    (dict(beacon_ratio=[3]), "ratio 3"),
])
def test_unsupported_reference_settings_are_refused(tmp_path, change, match):
    _, _, ref, _ = make_reference_checkpoint(tmp_path, "mistral")
    cfg = json.loads((ref / "config.json").read_text())
    cfg.update(change)
    (ref / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConversionError, match=match):
        import_reference(ref, tmp_path / "out")


def test_pickle_only_checkpoint_is_refused(tmp_path):
    ref = tmp_path / "ref"
    ref.mkdir()
    (ref / "config.json").write_text(json.dumps({"beacon_window": 16, "model_type": "llama"}))
    (ref / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(ConversionError, match="safetensors only"):
        import_reference(ref, tmp_path / "out")


def test_cli_convert_and_export(tmp_path, capsys):
    from longctx import cli

    _, adapter, ref, ref_tensors = make_reference_checkpoint(tmp_path, "llama")
    assert cli.main(["convert", str(ref), str(tmp_path / "ad"), "--write-base"]) == 0
    assert "--adapter" in capsys.readouterr().out
    assert cli.main(["export", str(tmp_path / "ad"), str(tmp_path / "back"), "--model", str(tmp_path / "ad" / "base"),
                     "--dtype", "fp32"]) == 0
    back = load_file(str(tmp_path / "back" / "model.safetensors"))
    assert all(torch.equal(back[k], ref_tensors[k]) for k in ref_tensors)
