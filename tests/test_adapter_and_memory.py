"""Adapter attach/detach/save/load and memory save/load."""

from __future__ import annotations

import json

import pytest
import torch

from longctx import AdapterError, BeaconAdapter, BeaconConfig, BeaconModel, compat
from longctx.beacon.adapter import CONFIG_FILE, WEIGHTS_FILE, RoutedLinear
from longctx.beacon.memory import MemoryFileError

from tiny import perturb_adapter, tiny_model


def test_detach_restores_the_model_bit_for_bit():
    model = tiny_model("qwen2")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modules_before = [type(m) for m in model.modules()]
    ids = torch.randint(3, 128, (1, 40))
    with torch.no_grad():
        base = model(ids).logits
    bm = BeaconModel(model, adapter=perturb_adapter(BeaconAdapter.from_model(model, BeaconConfig(window=16))))
    assert any(isinstance(m, RoutedLinear) for m in model.modules())
    with torch.no_grad():
        bm(ids)
    restored = bm.detach()
    assert restored is model
    assert [type(m) for m in model.modules()] == modules_before
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, base)


def test_copy_initialised_projections_equal_the_model_and_embedding_is_eos():
    model = tiny_model("qwen2")  # q/k/v biases
    ad = BeaconAdapter.from_model(model, BeaconConfig(window=16, projections=["q", "k", "v"]))
    attn = model.model.layers[1].self_attn
    assert torch.equal(ad.layers[1]["k"].weight, attn.k_proj.weight)
    assert torch.equal(ad.layers[1]["k"].bias, attn.k_proj.bias)
    assert "o" not in ad.layers[1]
    assert torch.equal(ad.embed[0], model.model.embed_tokens.weight[model.config.eos_token_id])


def test_adapter_save_load_round_trip(tmp_path):
    model = tiny_model("llama")
    ad = perturb_adapter(BeaconAdapter.from_model(model, BeaconConfig(window=16, ratios=[4], sink=1)))
    ad.save(tmp_path / "ad")
    ids = torch.randint(3, 128, (1, 50))
    bm = BeaconModel(model, adapter=ad)
    with torch.no_grad():
        first = bm(ids).logits
    bm.detach()
    loaded = BeaconAdapter.load(tmp_path / "ad", model)
    assert loaded.config == ad.config
    bm2 = BeaconModel(model, adapter=loaded)
    with torch.no_grad():
        second = bm2(ids).logits
    assert torch.equal(first, second)
    saved = json.loads((tmp_path / "ad" / CONFIG_FILE).read_text())
    assert saved["base_model"]["hidden_size"] == 64


@pytest.mark.parametrize("change,field", [(dict(hidden_size=96), "hidden_size"),
                                          (dict(num_hidden_layers=3), "num_hidden_layers"),
                                          (dict(num_attention_heads=8, num_key_value_heads=2), "num_attention_heads")])
def test_adapter_for_another_base_model_is_refused(tmp_path, change, field):
    BeaconAdapter.from_model(tiny_model("llama"), BeaconConfig(window=16)).save(tmp_path / "ad")
    other = tiny_model("llama", **change)
    with pytest.raises(AdapterError, match=field):
        BeaconAdapter.load(tmp_path / "ad", other)


def test_corrupt_adapter_file_is_refused(tmp_path):
    model = tiny_model("llama")
    BeaconAdapter.from_model(model, BeaconConfig(window=16)).save(tmp_path / "ad")
    path = tmp_path / "ad" / WEIGHTS_FILE
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AdapterError, match="cannot read adapter weights"):
        BeaconAdapter.load(tmp_path / "ad", model)


def test_adapter_with_wrong_tensors_is_refused(tmp_path):
    model = tiny_model("llama")
    BeaconAdapter.from_model(model, BeaconConfig(window=16, projections=["q"])).save(tmp_path / "ad")
    meta = json.loads((tmp_path / "ad" / CONFIG_FILE).read_text())
    meta["beacon"]["projections"] = ["q", "k"]
    (tmp_path / "ad" / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(AdapterError, match="missing"):
        BeaconAdapter.load(tmp_path / "ad", model)


def test_missing_adapter_is_a_clear_error(tmp_path):
    with pytest.raises(AdapterError, match="no adapter"):
        BeaconAdapter.load(tmp_path / "nothing-here", tiny_model("llama"))


def test_attaching_twice_is_refused():
    model = tiny_model("llama")
    BeaconModel(model, config=BeaconConfig(window=16))
    with pytest.raises(RuntimeError, match="already"):
        BeaconModel(model, config=BeaconConfig(window=16))


def test_memory_save_load_round_trip(tmp_path):
    model = tiny_model("qwen3")
    bm = BeaconModel(model, adapter=perturb_adapter(BeaconAdapter.from_model(model, BeaconConfig(window=16, ratios=[4], sink=2))))
    ids = torch.randint(3, 128, (1, 57))
    q1, q2 = torch.randint(3, 128, (1, 9)), torch.randint(3, 128, (1, 5))
    with torch.no_grad():
        bm(ids, logits="none")
        bm.save_memory(tmp_path / "mem.safetensors")
        a1 = bm(q1).logits
        g1 = bm.generate(q2, max_new_tokens=6, eos_token_id=[])
        bm.load_memory(tmp_path / "mem.safetensors")
        b1 = bm(q1).logits
        g2 = bm.generate(q2, max_new_tokens=6, eos_token_id=[])
        bm.load_memory(tmp_path / "mem.safetensors")  # ask again from the same memory
        c1 = bm(q1).logits
    assert torch.equal(a1, b1) and torch.equal(a1, c1)
    assert torch.equal(g1, g2)


def test_memory_from_another_model_is_refused(tmp_path):
    model = tiny_model("llama")
    bm = BeaconModel(model, config=BeaconConfig(window=16))
    with torch.no_grad():
        bm(torch.randint(3, 128, (1, 20)))
    bm.save_memory(tmp_path / "m.safetensors")
    bm.detach()
    other = BeaconModel(tiny_model("llama", num_hidden_layers=3), config=BeaconConfig(window=16))
    with pytest.raises(MemoryFileError, match="another base model"):
        other.load_memory(tmp_path / "m.safetensors")


def test_sharded_adapter_round_trip(tmp_path):
    model = tiny_model("llama")
    adapter = perturb_adapter(BeaconAdapter.from_model(model, BeaconConfig(window=16, ratios=[4])))
    adapter.save(tmp_path / "a", dtype=torch.bfloat16, max_shard_mb=0.1)
    shards = sorted(p.name for p in (tmp_path / "a").glob("adapter-*.safetensors"))
    assert len(shards) > 1 and not (tmp_path / "a" / "adapter.safetensors").exists()
    assert all((tmp_path / "a" / s).stat().st_size <= 0.1 * 2**20 for s in shards)
    back = BeaconAdapter.load(tmp_path / "a", model, dtype=torch.float32)
    for (k, v), (k2, v2) in zip(adapter.state_dict().items(), back.state_dict().items()):
        assert k == k2 and torch.equal(v.to(torch.bfloat16).float(), v2)
    index = tmp_path / "a" / "adapter.safetensors.index.json"
    data = json.loads(index.read_text())
    data["weight_map"]["embed"] = "../elsewhere.safetensors"
    index.write_text(json.dumps(data))
    with pytest.raises(AdapterError, match="outside"):
        BeaconAdapter.load(tmp_path / "a", model)


def test_cache_appends_in_place_hold_what_concatenation_would():
    """Without gradients the cache writes appends into a buffer with spare room: the same
    keys/values as torch.cat, no copy of the prefix per append, and a fresh buffer once
    compaction replaced the tensors."""
    g = torch.Generator().manual_seed(0)
    cache, ref = compat.new_cache(), []
    with torch.no_grad():
        k0, v0 = torch.randn(1, 3, 5, 8, generator=g), torch.randn(1, 3, 5, 8, generator=g)
        cache.update(k0, v0, 0)
        ref = [k0, v0]
        ptrs = set()
        for n in (1, 1, 7, 1):
            k, v = torch.randn(1, 3, n, 8, generator=g), torch.randn(1, 3, n, 8, generator=g)
            got_k, got_v = cache.update(k, v, 0)
            ref = [torch.cat((ref[0], k), -2), torch.cat((ref[1], v), -2)]
            assert torch.equal(got_k, ref[0]) and torch.equal(got_v, ref[1])
            ptrs.add(got_k.data_ptr())
        assert len(ptrs) == 1  # one buffer served every append
        compat.set_cache_kv(cache, 0, ref[0][:, :, ::2].clone(), ref[1][:, :, ::2].clone())  # "compaction"
        kept = [t[:, :, ::2] for t in ref]
        k, v = torch.randn(1, 3, 2, 8, generator=g), torch.randn(1, 3, 2, 8, generator=g)
        got_k, got_v = cache.update(k, v, 0)
        assert torch.equal(got_k, torch.cat((kept[0], k), -2)) and torch.equal(got_v, torch.cat((kept[1], v), -2))
        assert compat.cache_length(cache) == kept[0].shape[-2] + 2


@pytest.mark.parametrize("heads, kv_heads", [(4, 4), (6, 2)])
def test_prefix_causal_attention_equals_a_masked_softmax(heads, kv_heads):
    """The two-call flash path (grouped heads unrepeated, log-sum-exp merge) = one masked softmax."""
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, heads, 7, 16, generator=g)
    k, v = torch.randn(2, 1, kv_heads, 12, 16, generator=g)
    with torch.no_grad():
        out = compat._prefix_causal(q, k, v, 0.25)
    kr, vr = k.repeat_interleave(heads // kv_heads, 1), v.repeat_interleave(heads // kv_heads, 1)
    scores = (q @ kr.transpose(-1, -2)) * 0.25
    allowed = torch.ones(7, 12, dtype=torch.bool).tril(12 - 7)
    ref = scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ vr
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_rope_rotate_by_one_shift_equals_per_key_positions_and_composes():
    inv_freq = 1.0 / (10000 ** (torch.arange(0, 16, 2).float() / 16))
    keys = torch.randn(2, 3, 7, 20)  # head_dim 20, rotary 16: the last 4 pass through
    same = compat.rope_rotate(keys, torch.full((2, 7), -5), inv_freq)
    assert torch.allclose(compat.rope_rotate(keys, -5, inv_freq), same, atol=1e-6)
    back = compat.rope_rotate(compat.rope_rotate(keys, 9, inv_freq), -9, inv_freq)
    assert torch.allclose(back, keys, atol=1e-5) and not torch.allclose(same, keys, atol=1e-2)
