"""BeaconModel on tiny random models of each family, fp32."""

from __future__ import annotations

import pytest
import torch

from longctx import BeaconAdapter, BeaconConfig, BeaconModel
from longctx.beacon.plan import expected_kv_entries

from reference_impl import ReferenceBeacon
from tiny import FAMILIES, perturb_adapter, tiny_model

TOL = 1e-4


def make(family="llama", seed=0, **cfg):
    model = tiny_model(family, seed=seed)
    adapter = perturb_adapter(BeaconAdapter.from_model(model, BeaconConfig(**cfg)))
    return model, BeaconModel(model, adapter=adapter)


def cache_tensors(bm):
    return [(layer.keys.clone(), layer.values.clone()) for layer in bm.memory.cache.layers]


def max_diff(a, b):
    return (a - b).abs().max().item()


@pytest.mark.parametrize("family", FAMILIES)
def test_ratio_zero_equals_base_model(family):
    model = tiny_model(family)
    ids = torch.randint(3, 128, (1, 90))
    with torch.no_grad():
        base = model(ids).logits
    bm = BeaconModel(model, config=BeaconConfig(window=16, ratios=[0], sink=3))
    with torch.no_grad():
        out = bm(ids).logits
    assert max_diff(out, base) <= TOL
    assert bm.kv_entries() == [90]


@pytest.mark.parametrize("placement", ["interleave", "append"])
def test_input_without_beacons_equals_base_model(placement):
    model = tiny_model("qwen2")
    # interleave: fewer raw tokens than the ratio; append: shorter than one window
    n = 7 if placement == "interleave" else 30
    ids = torch.randint(3, 128, (1, n))
    with torch.no_grad():
        base = model(ids).logits
    bm = BeaconModel(model, adapter=perturb_adapter(BeaconAdapter.from_model(model, BeaconConfig(
        window=32, ratios=[8], placement=placement))))
    with torch.no_grad():
        out = bm(ids).logits
    assert max_diff(out, base) <= TOL


CASES = [
    ("llama", dict(window=16, ratios=[4], sink=0)),
    ("mistral", dict(window=16, ratios=[2], sink=1)),
    ("qwen2", dict(window=16, ratios=[4], sink=2)),
    ("qwen3", dict(window=16, ratios=[8], sink=0)),
    ("llama", dict(window=16, ratios=[2, 4, 8, 0], ratio_mix="step-random", sink=1)),
    ("llama", dict(window=16, ratios=[4], scheme="step-expansion")),
    ("llama", dict(window=16, ratios=[4], scheme="segmentation", attend_prev=False)),
    ("qwen2", dict(window=16, ratios=[4], placement="append", scheme="step-expansion")),
    ("qwen2", dict(window=16, ratios=[4], placement="append", scheme="step-expansion", attend_prev=False)),
    ("llama", dict(window=16, ratios=[4], placement="append")),
    ("llama", dict(window=16, ratios=[4], projections=["q", "k", "v"])),
]


@pytest.mark.parametrize("family,cfg", CASES)
def test_whole_pieces_and_token_by_token_agree(family, cfg):
    model, bm = make(family, **cfg)
    ids = torch.randint(3, 128, (1, 75))
    with torch.no_grad():
        whole = bm(ids).logits
        mem_whole = cache_tensors(bm)
        bm.reset(sequence=0)
        pieces = torch.cat([bm(ids[:, a:b]).logits for a, b in [(0, 5), (5, 37), (37, 38), (38, 75)]], 1)
        mem_pieces = cache_tensors(bm)
        bm.reset(sequence=0)
        ones = torch.cat([bm(ids[:, i : i + 1]).logits for i in range(75)], 1)
        mem_ones = cache_tensors(bm)
    assert max_diff(whole, pieces) <= TOL
    assert max_diff(whole, ones) <= TOL
    for (k0, v0), (k1, v1), (k2, v2) in zip(mem_whole, mem_pieces, mem_ones):
        assert k0.shape == k1.shape == k2.shape
        assert max(max_diff(k0, k1), max_diff(v0, v1), max_diff(k0, k2), max_diff(v0, v2)) <= TOL


@pytest.mark.parametrize("family,cfg", CASES)
def test_fast_compaction_matches_reference_recomputation(family, cfg):
    """Ours (rotate moved keys once) vs pre-RoPE keys re-rotated at compacted positions each step."""
    model, bm = make(family, **cfg)
    ids = torch.randint(3, 128, (1, 70))
    with torch.no_grad():
        ours = bm(ids).logits[0]
    chooser_ratios = _window_ratios(bm, n_windows=5)
    adapter = bm.adapter
    mem = cache_tensors(bm)
    fixed = bm.memory.samples[0].fixed
    bm.detach()
    ref = ReferenceBeacon(model, adapter, chooser_ratios)
    theirs = ref.run(ids[0].tolist())
    assert max_diff(ours, theirs) <= TOL
    for layer, (k, v) in enumerate(mem):
        assert max_diff(k[0, :, :fixed], ref.memory_keys(layer)) <= TOL
        assert max_diff(v[0, :, :fixed], ref.mem_v[layer]) <= TOL


def _window_ratios(bm, n_windows):
    from longctx.beacon.plan import RatioChooser

    ch = RatioChooser(bm.config)
    return [ch.window_ratio(0, i, None) for i in range(n_windows)]


@pytest.mark.parametrize("placement", ["interleave", "append"])
@pytest.mark.parametrize("ratio,sink", [(2, 0), (4, 0), (8, 1), (4, 3), (0, 2)])
def test_kv_entries_follow_the_formula(placement, ratio, sink):
    model, bm = make("llama", window=32, ratios=[ratio], sink=sink, placement=placement)
    ids = torch.randint(3, 128, (1, 230))
    fed = 0
    with torch.no_grad():
        for step in (1, 30, 1, 2, 100, 60, 36):
            bm(ids[:, fed : fed + step], logits="none")
            fed += step
            expected = expected_kv_entries(fed, 32, ratio, sink, placement)
            assert bm.kv_entries() == [expected]
            assert bm.memory.length == expected


def test_left_padded_batch_equals_one_by_one():
    model, bm = make("qwen2", window=16, ratios=[4], sink=1)
    lengths = [45, 20, 33]
    L = max(lengths)
    seqs = [torch.randint(3, 128, (n,)) for n in lengths]
    ids = torch.zeros(3, L, dtype=torch.long)
    mask = torch.zeros(3, L, dtype=torch.long)
    for b, s in enumerate(seqs):
        ids[b, L - len(s) :] = s
        mask[b, L - len(s) :] = 1
    with torch.no_grad():
        batch = bm(ids, attention_mask=mask).logits
        batch_next = bm(torch.tensor([[5], [6], [7]])).logits
        singles = []
        for b, s in enumerate(seqs):
            bm.reset()
            lo = bm(s.unsqueeze(0)).logits[0]
            nxt = bm(torch.tensor([[5 + b]])).logits[0]
            singles.append((lo, nxt))
    for b, (lo, nxt) in enumerate(singles):
        assert max_diff(batch[b, L - lengths[b] :], lo) <= TOL
        assert max_diff(batch_next[b], nxt) <= TOL


def test_batched_generation_equals_single():
    model, bm = make("llama", window=16, ratios=[4])
    a, b = torch.randint(3, 128, (40,)), torch.randint(3, 128, (27,))
    ids = torch.zeros(2, 40, dtype=torch.long)
    mask = torch.zeros(2, 40, dtype=torch.long)
    ids[0], mask[0] = a, 1
    ids[1, 13:], mask[1, 13:] = b, 1
    both = bm.generate(ids, attention_mask=mask, max_new_tokens=12, eos_token_id=[])
    bm.reset()
    one = bm.generate(a.unsqueeze(0), max_new_tokens=12, eos_token_id=[])
    bm.reset()
    two = bm.generate(b.unsqueeze(0), max_new_tokens=12, eos_token_id=[])
    assert torch.equal(both[0], one[0]) and torch.equal(both[1], two[0])


def test_loss_matches_manual_shifted_cross_entropy():
    model, bm = make("llama", window=16, ratios=[4])
    ids = torch.randint(3, 128, (1, 50))
    labels = ids.clone()
    labels[0, :10] = -100
    out = bm(ids, labels=labels)
    bm.reset()
    logits = bm(ids).logits[0]
    manual = torch.nn.functional.cross_entropy(logits[:-1], labels[0, 1:], ignore_index=-100)
    assert abs(out.loss.item() - manual.item()) <= TOL
    assert out.n_tokens == 40


def test_gradients_reach_only_beacon_parameters():
    model, bm = make("llama", window=16, ratios=[4])
    n = bm.freeze_base()
    assert n == bm.adapter.num_parameters() > 0
    ids = torch.randint(3, 128, (1, 40))
    out = bm(ids, labels=ids, logits="none")
    out.loss.backward()
    grads = [p.grad for p in bm.adapter.parameters()]
    assert all(g is not None for g in grads)
    assert sum(g.abs().sum().item() for g in grads) > 0
    mine = {id(p) for p in bm.adapter.parameters()}
    assert all(p.grad is None for p in model.parameters() if id(p) not in mine)


def test_generation_is_consistent_with_forward():
    model, bm = make("mistral", window=16, ratios=[4])
    ids = torch.randint(3, 128, (1, 30))
    new = bm.generate(ids, max_new_tokens=10, eos_token_id=[], raw_tail=False)
    bm.reset()
    seq = ids
    for _ in range(10):
        bm.reset()
        with torch.no_grad():
            nxt = bm(seq, logits="last").logits[0, -1].argmax()
        seq = torch.cat((seq, nxt.view(1, 1)), 1)
    assert torch.equal(new[0], seq[0, 30:])


def test_sampling_is_seeded_and_streamer_receives_tokens():
    model, bm = make("llama", window=16, ratios=[4])
    ids = torch.randint(3, 128, (1, 20))

    class Collect:
        def __init__(self):
            self.tokens, self.ended = [], False

        def put(self, t):  # the prompt first (as transformers' streamers get it), then each token
            self.tokens.append(t.flatten().tolist())

        def end(self):
            self.ended = True

    s = Collect()
    torch.manual_seed(3)
    a = bm.generate(ids, max_new_tokens=8, do_sample=True, top_k=20, top_p=0.9, temperature=0.8, streamer=s,
                    eos_token_id=[])
    bm.reset()
    torch.manual_seed(3)
    b = bm.generate(ids, max_new_tokens=8, do_sample=True, top_k=20, top_p=0.9, temperature=0.8, eos_token_id=[])
    assert torch.equal(a, b)
    assert s.tokens[0] == ids[0].tolist() and sum(s.tokens[1:], []) == a[0].tolist() and s.ended


def test_generation_stops_at_eos_and_memory_persists():
    model, bm = make("llama", window=16, ratios=[4])
    ids = torch.randint(3, 128, (1, 20))
    with torch.no_grad():
        first = bm(ids, logits="last").logits[0, -1].argmax().item()
    bm.reset()
    out = bm.generate(ids, max_new_tokens=10, eos_token_id=first)
    assert out.shape[1] == 1 and out[0, 0].item() == first
    assert bm.tokens_read() == [21]  # prompt + the generated token, fed back for the next turn
    bm.generate(torch.tensor([[9, 10]]), max_new_tokens=3, eos_token_id=[])
    assert bm.tokens_read() == [26]


@pytest.mark.parametrize("family,cfg", [CASES[0], CASES[2], CASES[5], CASES[8]])
def test_generation_matches_reference_procedure(family, cfg):
    """Greedy decoding: ours (incremental, compacting) vs the naive reference recomputed each step."""
    model, bm = make(family, **cfg)
    prompt = torch.randint(3, 128, (1, 27))
    new = bm.generate(prompt, max_new_tokens=12, eos_token_id=[], raw_tail=False)[0].tolist()
    adapter = bm.adapter
    ratios = _window_ratios(bm, n_windows=4)
    bm.detach()
    seq = prompt[0].tolist()
    for _ in range(12):
        logits = ReferenceBeacon(model, adapter, ratios).run(seq)
        seq.append(int(logits[-1].argmax()))
    assert new == seq[27:]


@pytest.mark.parametrize("cfg", [dict(window=16, ratios=[4], sink=1),
                                 dict(window=16, ratios=[2, 4], ratio_mix="step-random", scheme="step-expansion")])
def test_activation_checkpointing_gives_the_same_loss_and_gradients(cfg):
    model, bm = make("qwen2", **cfg)
    bm.freeze_base()
    ids = torch.randint(3, 128, (1, 60))

    def grads():
        bm.reset(sequence=0)
        for p in bm.adapter.parameters():
            p.grad = None
        out = bm(ids, labels=ids, logits="none")
        out.loss.backward()
        return out.loss.item(), [p.grad.clone() for p in bm.adapter.parameters()]

    loss0, g0 = grads()
    bm.set_checkpointing(True)
    assert any(type(m).__name__ == "CheckpointedLayer" for m in model.modules())
    loss1, g1 = grads()
    bm.set_checkpointing(False)
    assert abs(loss0 - loss1) <= 1e-6
    assert max((a - b).abs().max().item() for a, b in zip(g0, g1)) <= 1e-5
    assert not any(type(m).__name__ == "CheckpointedLayer" for m in model.modules())


def test_raw_tail_decodes_with_the_last_window_uncompressed():
    """With append placement a held window has no beacons yet, so decoding with raw_tail equals
    the reference procedure with the windows after the first left uncompressed (ratio 0)."""
    model = tiny_model("llama")
    adapter = perturb_adapter(BeaconAdapter.from_model(model, BeaconConfig(window=16, ratios=[4], placement="append")))
    prompt = torch.randint(3, 128, (1, 32))  # ends exactly where window 2 closes
    bm = BeaconModel(model, adapter=adapter)
    held = bm.generate(prompt, max_new_tokens=10, eos_token_id=[])
    plain = bm.generate(prompt, max_new_tokens=10, eos_token_id=[], raw_tail=False) if not bm.reset() else None
    bm.detach()
    oracle_adapter = BeaconAdapter.from_model(model, adapter.config.replace(ratios=[4, 0, 0, 0], ratio_mix="sequence"))
    oracle_adapter.load_state_dict(adapter.state_dict())
    oracle = BeaconModel(model, adapter=oracle_adapter).generate(prompt, max_new_tokens=10, eos_token_id=[],
                                                                 raw_tail=False)
    assert torch.equal(held, oracle)
    assert not torch.equal(held, plain)  # the reference compresses the question before decoding


@pytest.mark.parametrize("placement", ["interleave", "append"])
@pytest.mark.parametrize("n_prompt", [32, 27, 30])
def test_raw_tail_leaves_the_memory_the_reference_builds(placement, n_prompt):
    model, bm = make("qwen2", window=16, ratios=[4], placement=placement, sink=1)
    prompt = torch.randint(3, 128, (1, n_prompt))
    new = bm.generate(prompt, max_new_tokens=9, eos_token_id=[])
    entries, held = bm.kv_entries(), cache_tensors(bm)
    with torch.no_grad():
        nxt = bm(torch.tensor([[5]]), logits="last").logits
    bm.reset()
    with torch.no_grad():
        bm(torch.cat((prompt, new), 1), logits="none")
        assert bm.kv_entries() == entries
        for (k1, v1), (k2, v2) in zip(held, cache_tensors(bm)):
            assert max_diff(k1, k2) <= TOL and max_diff(v1, v2) <= TOL
        assert max_diff(bm(torch.tensor([[5]]), logits="last").logits, nxt) <= TOL


def test_raw_tail_keeps_the_window_open_while_decoding():
    model, bm = make("llama", window=16, ratios=[4])
    prompt = torch.randint(3, 128, (1, 32))
    seen = []

    class Watch:
        def put(self, t):
            if bm.memory is not None:  # the first call carries the prompt, before it is read
                seen.append(bm.kv_entries()[0])

        def end(self):
            pass

    bm.generate(prompt, max_new_tokens=6, eos_token_id=[], streamer=Watch())
    # window 1 compressed to 4 beacons; window 2 (16 raw + 4 beacons) held, then one raw row per token
    assert seen == [4 + 20 + i for i in range(6)]
    assert bm.kv_entries() == [expected_kv_entries(38, 16, 4)]  # released: as if read without the hold


def test_without_memory_the_last_window_equals_reading_it_alone():
    model = tiny_model("mistral")
    adapter = perturb_adapter(BeaconAdapter.from_model(model, BeaconConfig(window=16, ratios=[4])))
    ids = torch.randint(3, 128, (1, 40))
    with torch.no_grad():
        forgetful = BeaconModel(model, adapter=adapter, keep_memory=False)
        lo = forgetful(ids).logits[0, 32:]
        assert forgetful.kv_entries() == [8 + 2]  # the open window only: 8 raw, 2 beacons
        alone = forgetful(ids[:, 32:]).logits[0] if not forgetful.reset() else None
        forgetful.detach()
        keeper = BeaconModel(model, adapter=adapter)
        remembered = keeper(ids).logits[0, 32:]
    assert max_diff(lo, alone) <= TOL
    assert max_diff(lo, remembered) > 1e-3  # the memory does change the last window
