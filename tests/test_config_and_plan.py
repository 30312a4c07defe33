"""Pure planning functions and config validation (no model)."""

from __future__ import annotations

import pytest

from longctx import BeaconConfig, BeaconConfigError
from longctx.beacon.plan import (
    BEACON,
    RAW,
    RatioChooser,
    SampleState,
    compaction_keep,
    entry_positions,
    expected_kv_entries,
    next_segment,
    plan_step,
    window_mask,
)


@pytest.mark.parametrize("kwargs,field", [
    (dict(window=32, ratios=[3]), "ratios"),
    (dict(window=0), "window"),
    (dict(ratios=[]), "ratios"),
    (dict(ratios=[-2]), "ratios"),
    (dict(scheme="diagonal"), "scheme"),
    (dict(placement="prepend"), "placement"),
    (dict(ratio_mix="sometimes"), "ratio_mix"),
    (dict(projections=["q", "x"]), "projections"),
    (dict(embed_init="pad"), "embed_init"),
    (dict(window=16, sink=16), "sink"),
])
def test_bad_settings_name_the_field(kwargs, field):
    with pytest.raises(BeaconConfigError, match=f"BeaconConfig.{field}"):
        BeaconConfig(**kwargs)


def test_unknown_field_in_saved_config():
    with pytest.raises(BeaconConfigError, match="unknown fields"):
        BeaconConfig.from_dict({"window": 16, "stride": 8})


def test_interleave_segment_layout_and_remainder():
    cfg = BeaconConfig(window=8, ratios=[2])
    seg = next_segment(cfg, 2, 0, 5)
    assert seg.kind == (RAW, RAW, BEACON, RAW, RAW, BEACON, RAW) and seg.n_raw == 5 and not seg.closes
    seg = next_segment(cfg, 2, 5, 100)  # continues the open window; stops where it closes
    assert seg.n_raw == 3 and seg.closes and seg.kind == (RAW, BEACON, RAW, RAW, BEACON)
    assert seg.idx == (6, 3, 7, 8, 4)


def test_append_segment_layout():
    cfg = BeaconConfig(window=8, ratios=[4], placement="append")
    assert next_segment(cfg, 4, 0, 5).kind == (RAW,) * 5
    seg = next_segment(cfg, 4, 5, 10)
    assert seg.closes and seg.kind == (RAW,) * 3 + (BEACON,) * 2


def test_spec_positions_for_append_step_expansion():
    cfg = BeaconConfig(window=32, ratios=[4], placement="append", scheme="step-expansion", attend_prev=True)
    beacons = list(range(1, 9))
    assert entry_positions(cfg, 4, 0, [BEACON] * 8, beacons) == [4, 9, 14, 19, 24, 29, 34, 39]
    cfg = cfg.replace(attend_prev=False)
    assert entry_positions(cfg, 4, 0, [BEACON] * 8, beacons) == [4, 8, 12, 16, 20, 24, 28, 32]


def test_interleave_positions_are_contiguous():
    cfg = BeaconConfig(window=8, ratios=[2])
    seg = next_segment(cfg, 2, 0, 8)
    assert entry_positions(cfg, 2, 5, seg.kind, seg.idx) == list(range(5, 5 + 12))


@pytest.mark.parametrize("placement,ratio,sink,expected", [
    ("interleave", 4, 0, 58), ("interleave", 8, 1, 34), ("interleave", 2, 0, 108), ("append", 4, 0, 56)])
def test_kv_formula_matches_reference_counts(placement, ratio, sink, expected):
    assert expected_kv_entries(200, 32, ratio, sink, placement) == expected


def test_compaction_keeps_sink_first_then_beacons():
    kind = [RAW, RAW, BEACON, RAW, RAW, BEACON]
    idx = [1, 2, 1, 3, 4, 2]
    assert compaction_keep(3, True, 2, kind, idx) == [0, 1, 3, 2, 5]
    assert compaction_keep(3, False, 2, kind, idx) == [2, 5]
    assert compaction_keep(1, True, 0, [RAW] * 4, [1, 2, 3, 4]) == [0, 1, 2, 3]


def test_step_expansion_mask():
    cfg = BeaconConfig(window=8, ratios=[2], scheme="step-expansion", attend_prev=False)
    seg = next_segment(cfg, 2, 0, 4)  # r1 r2 b1 r3 r4 b2
    m = window_mask(cfg, 2, seg.kind, seg.idx, seg.kind, seg.idx)
    assert m[3].tolist() == [True, True, False, True, False, False]  # r3: raws only
    assert m[5].tolist() == [True, True, False, True, True, True]  # b2: raws 1..4, itself, not b1
    seg_cfg = cfg.replace(scheme="segmentation")
    m = window_mask(seg_cfg, 2, seg.kind, seg.idx, seg.kind, seg.idx)
    assert m[5].tolist() == [False, False, False, True, True, True]


def test_ratio_mixes():
    cfg = BeaconConfig(window=64, ratios=[2, 4, 8, 16], ratio_mix="step-random", seed=7)
    ch = RatioChooser(cfg)
    draws = [ch.window_ratio(0, w, None) for w in range(50)]
    assert draws == [RatioChooser(cfg).window_ratio(0, w, None) for w in range(50)]
    assert set(draws) == {2, 4, 8, 16}
    seq = RatioChooser(cfg.replace(ratio_mix="sequence"))
    assert [seq.window_ratio(0, w, None) for w in range(5)] == [2, 4, 8, 16, 2]
    inst = RatioChooser(cfg.replace(ratio_mix="instance-random"))
    r = inst.instance_ratio(3, None)
    assert r in cfg.ratios and inst.window_ratio(3, 9, r) == r


def test_adapt_k_picks_smallest_fitting_ratio():
    cfg = BeaconConfig(window=1024, ratios=[2, 4, 8, 16, 32], ratio_mix="adapt-1024")
    ch = RatioChooser(cfg, max_positions=8192)
    assert ch.instance_ratio(0, 6000) == 2  # (8192-1024)*2+1024 = 15360 >= 7024
    assert ch.instance_ratio(0, 30000) == 8  # 4 gives 29696 < 31024
    assert ch.instance_ratio(0, 10**7) == 32  # none fits: the largest


def _fixed(ratio):
    return lambda st: ratio


def test_plan_step_lays_out_one_window_and_its_compaction():
    cfg = BeaconConfig(window=8, ratios=[4], sink=1)
    states = [SampleState()]
    plan = plan_step(cfg, states, [2], 14, 0, ratio_of=_fixed(4))  # 12 tokens from column 2
    seg = plan.segments[0]
    assert seg.n_raw == 8 and seg.closes and plan.rows == 10  # 8 raw + 2 interleaved beacons
    assert plan.beacon[0].tolist() == [False] * 4 + [True] + [False] * 4 + [True]
    assert plan.src[0].tolist() == [2, 3, 4, 5, -1, 6, 7, 8, 9, -1]
    assert plan.positions[0].tolist() == list(range(10))
    assert plan.mask is None  # one sample, default scheme: causal
    # on close: the sink raw (cache index 0) and the two beacons (4 and 9) survive
    assert plan.keep == [[0, 4, 9]]
    assert plan.fixed_after == [3]
    assert plan.delta[0] == [0, 1 - 4, 2 - 9]
    raw, bcn = plan.routing()
    assert bcn.tolist() == [4, 9] and len(raw) == 8
    assert plan.n_raw == 8


def test_plan_step_pads_a_batch_and_keeps_every_entry_when_nothing_closes():
    cfg = BeaconConfig(window=8, ratios=[4])
    states = [SampleState(), SampleState()]
    plan = plan_step(cfg, states, [3, 0], 6, 0, ratio_of=_fixed(4))  # 3 and 6 tokens, no window closes
    assert [s.n_raw for s in plan.segments] == [3, 6]
    assert plan.rows == 7  # 6 raw + 1 beacon for the longer sample
    assert plan.src[0].tolist() == [-1, -1, -1, -1, 3, 4, 5]  # right-aligned after padding
    assert plan.mask is not None and plan.mask.shape == (2, 1, 7, 7)
    assert plan.mask[0, 0, 0].tolist() == [True] + [False] * 6  # a padding row sees itself only
    assert plan.keep == [[4, 5, 6], list(range(7))]  # padding removed, nothing re-rotated
    assert all(not any(d) for d in plan.delta)


def test_plan_step_without_memory_keeps_only_the_sink():
    cfg = BeaconConfig(window=8, ratios=[2], sink=2)
    states = [SampleState(windows_done=1, fixed=6, ratio=2)]  # sink 2 + 4 beacons held
    plan = plan_step(cfg, states, [0], 8, 6, ratio_of=_fixed(2), keep_memory=False)
    assert plan.fixed_after == [2] and plan.keep == [[0, 1]]


def test_plan_step_held_window_overflows_raw():
    cfg = BeaconConfig(window=4, ratios=[2])
    states = [SampleState(raw_in_window=3, kind=[RAW, RAW, BEACON, RAW], idx=[1, 2, 1, 3], ratio=2, hold=True)]
    plan = plan_step(cfg, states, [0], 3, 4, ratio_of=_fixed(2))
    seg = plan.segments[0]
    assert seg.n_raw == 3 and not seg.closes
    assert plan.overflow == [(1, 3)]  # tokens 2 and 3 of this input lie past the window's end
    assert plan.keep is None


def test_training_an_adapter_further_keeps_its_structure():
    from longctx.beacon.config import continue_training, training_beacon

    made = BeaconConfig(window=64, ratios=[4], placement="append", scheme="step-expansion", attend_prev=False,
                        projections=["q", "k", "v"], embed_init="bos")
    run = training_beacon().replace(window=128, ratios=[2, 4], sink=2)
    cfg = continue_training(run, made)
    assert (cfg.placement, cfg.scheme, cfg.attend_prev, cfg.projections, cfg.embed_init) == (
        "append", "step-expansion", False, ["q", "k", "v"], "bos")
    assert (cfg.window, cfg.ratios, cfg.sink) == (128, [2, 4], 2)  # the run's own
    with pytest.raises(BeaconConfigError, match="BeaconConfig.scheme: the run sets 'segmentation'"):
        continue_training(run.replace(scheme="segmentation"), made)


def test_saved_runs_of_the_flat_layout_read_into_the_beacon_section():
    from longctx.train.trainer import TrainConfig, upgrade_saved

    old = {"model": "m", "out": "o", "window": 256, "ratios": [4, 8], "ratio_mix": "fixed", "sink": 1,
           "projections": ["q", "k", "v", "o"], "embed_init": "eos", "seed": 3, "steps": 5}
    cfg = TrainConfig.from_dict(old)
    assert (cfg.beacon.window, cfg.beacon.ratios, cfg.beacon.ratio_mix, cfg.beacon.sink) == (256, [4, 8], "fixed", 1)
    assert cfg.beacon_config().seed == 3 and cfg.steps == 5
    assert upgrade_saved({"beacon": {"window": 8}}) == {"beacon": {"window": 8}}
