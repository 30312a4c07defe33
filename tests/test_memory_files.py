"""Saved memories are checked, not trusted: identity, shapes, values, state; one file, written
all or nothing."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from longctx import BeaconAdapter, BeaconConfig, BeaconModel
from longctx.beacon.memory import MemoryFileError

from tiny import perturb_adapter, tiny_model

CFG = BeaconConfig(window=16, ratios=[4])


def _bm(seed_model=0, seed_adapter=1, layers=2, dtype=torch.float32):
    model = tiny_model("llama", seed=seed_model, num_hidden_layers=layers, dtype=dtype)
    return BeaconModel(model, adapter=perturb_adapter(BeaconAdapter.from_model(model, CFG), seed=seed_adapter))


@pytest.fixture()
def saved(tmp_path):
    bm = _bm()
    with torch.no_grad():
        bm(torch.randint(3, 128, (1, 40)))
    path = bm.save_memory(tmp_path / "mem.safetensors")
    return bm, path


def _rewrite(path, tensors=None, state=None):
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        old = {k: f.get_tensor(k) for k in f.keys()}
    st = json.loads(meta["state"])
    tensors = tensors(old) if tensors else old
    st = state(st) if state else st
    save_file(tensors, str(path), metadata={"format": meta["format"], "state": json.dumps(st)})


def test_round_trip_is_one_file_and_answers_the_same(saved, tmp_path):
    bm, path = saved
    assert [p.name for p in tmp_path.iterdir()] == ["mem.safetensors"]
    ids = torch.randint(3, 128, (1, 5))
    with torch.no_grad():
        a = bm(ids).logits
        bm.load_memory(path)
        b = bm(ids).logits
    assert torch.equal(a, b)


@pytest.mark.parametrize("other,match", [
    (dict(seed_adapter=5), "another adapter"),
    (dict(seed_model=7), "another base model"),
    (dict(layers=1), "another base model"),
])
def test_memory_of_another_adapter_or_model_is_refused(saved, other, match):
    _, path = saved
    with pytest.raises(MemoryFileError, match=match):
        _bm(**other).load_memory(path)


def _drop_layer(t):
    return {k: v for k, v in t.items() if not k.startswith("layers.1.")}


def _nan(t):
    t["layers.0.keys"][0, 0, 0, 0] = float("nan")
    return t


def _short(t):
    return {k: v[:, :, :2].contiguous() for k, v in t.items()}


def _head_dim(t):
    return {k: v[..., :8].contiguous() for k, v in t.items()}


def _uneven(t):
    t["layers.1.values"] = t["layers.1.values"][:, :, 1:].contiguous()
    return t


@pytest.mark.parametrize("tensors,state,match", [
    (_drop_layer, None, "does not hold 2 layers"),
    (_nan, None, "non-finite"),
    (_short, None, "the tensors hold 2"),
    (_head_dim, None, "has shape"),
    (_uneven, None, "other layers"),
    (None, lambda s: {**s, "surprise": 1}, "unknown fields"),
    (None, lambda s: {**s, "samples": [{**s["samples"][0], "bogus": 1}]}, "malformed state"),
    (None, lambda s: {**s, "samples": []}, "no samples"),
    (None, lambda s: {**s, "format": "other/1"}, "not a longctx memory"),
    (None, lambda s: {**s, "beacon": {**s["beacon"], "window": -1}}, "malformed state"),
])
def test_damaged_memory_files_are_refused(saved, tensors, state, match):
    bm, path = saved
    _rewrite(path, tensors, state)
    with pytest.raises(MemoryFileError, match=match):
        bm.load_memory(path)


def test_not_a_memory_file(tmp_path):
    bm = _bm()
    (tmp_path / "x.safetensors").write_bytes(b"garbage")
    with pytest.raises(MemoryFileError, match="cannot read saved memory"):
        bm.load_memory(tmp_path / "x.safetensors")
    with pytest.raises(MemoryFileError, match="cannot read saved memory"):
        bm.load_memory(tmp_path / "missing.safetensors")


def test_memory_dtype_follows_the_model(tmp_path):
    """A memory saved from the fp32 model is read by the same model in bf16, in bf16."""
    bm = _bm()
    with torch.no_grad():
        bm(torch.randint(3, 128, (1, 40)))
    path = bm.save_memory(tmp_path / "m.safetensors")
    bm.detach()
    low = BeaconModel(bm.model.to(torch.bfloat16), adapter=bm.adapter)
    low.load_memory(path)
    k, _ = next(iter(__import__("longctx").compat.cache_kv(low.memory.cache)))
    assert k.dtype == torch.bfloat16
    with torch.no_grad():
        out = low(torch.randint(3, 128, (1, 4))).logits
    assert torch.isfinite(out).all()


def test_crash_while_saving_keeps_the_previous_memory(saved, monkeypatch):
    import longctx.safefiles as sf

    bm, path = saved
    before = path.read_bytes()
    with torch.no_grad():
        bm(torch.randint(3, 128, (1, 20)))

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(sf, "save_file", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        bm.save_memory(path)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_crash_while_saving_an_adapter_keeps_the_previous_one(tmp_path, monkeypatch):
    import longctx.safefiles as sf

    bm = _bm()
    out = bm.adapter.save(tmp_path / "ad")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with torch.no_grad():
        bm.adapter.embed.add_(1.0)

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(sf, "save_file", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        bm.adapter.save(out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ad"]
    BeaconAdapter.load(out, tiny_model("llama"))


def test_adapter_with_damaged_bytes_is_refused(tmp_path):
    from longctx.beacon.adapter import AdapterError

    model = tiny_model("llama")
    out = perturb_adapter(BeaconAdapter.from_model(model, CFG)).save(tmp_path / "ad")
    data = bytearray((out / "adapter.safetensors").read_bytes())
    data[-3] ^= 0xFF  # a weight byte, header intact
    (out / "adapter.safetensors").write_bytes(bytes(data))
    with pytest.raises(AdapterError, match="checksum"):
        BeaconAdapter.load(out, model)


def test_adapter_save_refuses_a_folder_with_other_files(tmp_path):
    from longctx.beacon.adapter import AdapterError

    model = tiny_model("llama")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("keep")
    with pytest.raises(AdapterError, match="not part of an adapter"):
        BeaconAdapter.from_model(model, CFG).save(tmp_path / "mine")
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "keep"


def test_crash_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import longctx.train.checkpoint as ck

    bm = _bm()
    opt = torch.optim.AdamW(bm.adapter.parameters(), lr=1e-3)
    bm.adapter.embed.grad = torch.ones_like(bm.adapter.embed)
    opt.step()
    first = ck.save_checkpoint(tmp_path, 1, bm.adapter.state_dict(), ck.optimizer_state(bm.adapter, opt), {"seed": 0})
    before = {p.name: p.read_bytes() for p in first.iterdir()}
    calls = []

    def boom(tensors, path, *a, **k):  # the optimizer file is written, the weights are not
        calls.append(path)
        if len(calls) == 2:
            raise RuntimeError("killed")
        return real(tensors, path, *a, **k)

    real = ck.save_file
    monkeypatch.setattr(ck, "save_file", boom)
    with pytest.raises(RuntimeError, match="killed"):
        ck.save_checkpoint(tmp_path, 2, bm.adapter.state_dict(), ck.optimizer_state(bm.adapter, opt), {"seed": 0})
    assert ck.latest_checkpoint(tmp_path) == first
    assert {p.name: p.read_bytes() for p in first.iterdir()} == before
    state = ck.load_checkpoint(first, bm.adapter, opt)
    assert state["step"] == 1
