"""Integration with the real embedded default, SmolLM2-135M-Instruct (installed by scripts/setup.sh)."""

from __future__ import annotations

import json

import pytest
import torch

from longctx import BeaconAdapter, BeaconConfig, BeaconModel, cli, load_model
from longctx.beacon.plan import expected_kv_entries

pytestmark = pytest.mark.smollm2


@pytest.fixture(scope="module")
def smol32():
    model, tok = load_model("smollm2-135m", dtype="fp32", device="cpu")
    return model, tok


@pytest.fixture(scope="module")
def text_ids(smol32):
    from longctx.data import moby_dick

    return smol32[1](moby_dick()[:4000], return_tensors="pt").input_ids[:, :300]


def test_ratio_zero_equals_base_model(smol32, text_ids):
    model, tok = smol32
    with torch.no_grad():
        base = model(text_ids).logits
    bm = BeaconModel(model, tok, config=BeaconConfig(window=64, ratios=[0], sink=4))
    try:
        with torch.no_grad():
            out = bm(text_ids).logits
    finally:
        bm.detach()
    assert (out - base).abs().max().item() <= 1e-4


def test_pieces_equal_whole_and_reference(smol32, text_ids):
    from reference_impl import ReferenceBeacon
    from tiny import perturb_adapter

    model, tok = smol32
    ids = text_ids[:, :150]
    adapter = perturb_adapter(BeaconAdapter.from_model(model, BeaconConfig(window=64, ratios=[4], sink=1)), scale=0.01)
    bm = BeaconModel(model, tok, adapter)
    try:
        with torch.no_grad():
            whole = bm(ids).logits[0]
            bm.reset(sequence=0)
            pieces = torch.cat([bm(ids[:, a:b]).logits[0] for a, b in [(0, 63), (63, 65), (65, 150)]])
            assert bm.kv_entries() == [expected_kv_entries(150, 64, 4, 1)]
    finally:
        bm.detach()
    ref = ReferenceBeacon(model, adapter, [4, 4, 4]).run(ids[0].tolist())
    assert (whole - pieces).abs().max().item() <= 1e-4
    assert (whole - ref).abs().max().item() <= 1e-4


def test_cli_generate_compress_and_ask(tmp_path, capsys):
    from longctx.data import moby_dick

    src = tmp_path / "chapter.txt"
    src.write_text(moby_dick()[:9000])
    out = tmp_path / "summary.json"
    rc = cli.main(["generate", str(src), "--prompt", "Who is the narrator?", "--max-new-tokens", "4",
                   "--window", "256", "--ratios", "8", "--json", str(out)])
    assert rc == 0
    s = json.loads(out.read_text())
    from longctx.beacon.adapter import saved_config
    from longctx.cli import SHIPPED_ADAPTERS

    sink = saved_config(SHIPPED_ADAPTERS["smollm2-135m"]).sink  # the shipped adapter's sink tokens stay
    assert s["kv_entries_held_per_layer"] == expected_kv_entries(s["tokens_read"], 256, 8, sink=sink)
    assert s["kv_entries_held_per_layer"] < s["tokens_read"] / 3
    printed = capsys.readouterr().out
    assert "tokens read" in printed and "KV entries" in printed
    assert "adapters/smollm2-135m-beacon" in printed  # the shipped adapter is the default
    mem = tmp_path / "mem.safetensors"
    assert cli.main(["compress", str(src), "--out", str(mem), "--window", "256", "--ratios", "8"]) == 0
    assert mem.exists() and not (tmp_path / "mem.safetensors.json").exists()  # one file
    assert cli.main(["ask", str(mem), "--prompt", "Who is the narrator?", "What is a whale?",
                     "--max-new-tokens", "3"]) == 0
    assert capsys.readouterr().out.count("Q: ") == 2
