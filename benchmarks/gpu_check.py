"""CUDA correctness: beacon on the GPU (fp32 and bf16) against the same on the CPU in fp32.

Run on a GPU machine (without one it runs the same comparisons on the CPU, to show the script
works); prints max |diff| of logits per case.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from longctx import BeaconAdapter, BeaconConfig, BeaconModel  # noqa: E402

from tiny import perturb_adapter, tiny_model  # noqa: E402

CASES = [
    ("llama", dict(window=64, ratios=[8])),
    ("qwen2", dict(window=64, ratios=[4], sink=2)),
    ("qwen3", dict(window=64, ratios=[2, 8], ratio_mix="step-random")),
    ("mistral", dict(window=64, ratios=[4], placement="append", scheme="step-expansion")),
]


@torch.no_grad()
def run(model, adapter, ids, pieces=None):
    bm = BeaconModel(model, adapter=adapter)
    try:
        if pieces is None:
            return bm(ids).logits.float().cpu()
        return torch.cat([bm(ids[:, a:b]).logits.float().cpu() for a, b in pieces], 1)
    finally:
        bm.detach()


def loss_and_grads(model, adapter, ids):
    bm = BeaconModel(model, adapter=adapter)
    try:
        bm.freeze_base()
        loss = bm(ids, labels=ids, logits="none").loss
        loss.backward()
        grads = {k: p.grad.float().cpu() for k, p in adapter.named_parameters() if p.grad is not None}
        return loss.item(), grads
    finally:
        bm.detach()


def grad_diff(cpu_model, ad, ids, device) -> dict[str, float]:
    """Training path (window attention backward) on ``device`` in fp32 against the CPU in fp32."""
    ref_loss, ref = loss_and_grads(copy.deepcopy(cpu_model), copy.deepcopy(ad), ids)
    gm = copy.deepcopy(cpu_model).to(device)
    gad = BeaconAdapter.from_model(gm, ad.config)
    gad.load_state_dict(ad.state_dict())
    loss, got = loss_and_grads(gm, gad, ids.to(device))
    rel = max(((got[k] - ref[k]).norm() / ref[k].norm().clamp_min(1e-12)).item() for k in ref)
    return {"loss_diff": abs(loss - ref_loss), "max_rel_grad_diff": rel, "n_grads": len(got)}


def main() -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"# device: {device}", flush=True)
    results = []
    for family, cfg in CASES:
        cpu_model = tiny_model(family, max_position_embeddings=4096)
        ad = perturb_adapter(BeaconAdapter.from_model(cpu_model, BeaconConfig(**cfg)))
        ids = torch.randint(3, 128, (1, 700))
        ref = run(cpu_model, ad, ids)
        row = {"family": family, "config": cfg}
        for dtype in (torch.float32, torch.bfloat16):
            gm = copy.deepcopy(cpu_model).to(device, dtype)
            gad = BeaconAdapter.from_model(gm, ad.config)
            gad.load_state_dict({k: v.to(dtype) for k, v in ad.state_dict().items()})
            whole = run(gm, gad, ids.to(device))
            pieces = run(gm, gad, ids.to(device), [(0, 100), (100, 101), (101, 700)])
            name = "fp32" if dtype == torch.float32 else "bf16"
            row[f"{device}_{name}_vs_cpu_fp32"] = (whole - ref).abs().max().item()
            row[f"{device}_{name}_pieces_vs_whole"] = (pieces - whole).abs().max().item()
        row[f"{device}_fp32_grad_vs_cpu_fp32"] = grad_diff(cpu_model, ad, ids, device)
        results.append(row)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
