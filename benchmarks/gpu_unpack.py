"""Back here, after a lease: turn what benchmarks/gpu_jobs.py left in $OUT into usable folders.

    python benchmarks/gpu_unpack.py FILES_AT [DEST]      (DEST default runs/gpu)

* ``DEST/beacon-adapter/``: the bf16 shards with their index and config (``BeaconAdapter.load`` reads it)
* ``DEST/smollm2-<method>/model/``: SmolLM2 with its RoPE scaled as the run's settings say and the
  method's LoRA merged in: a stock transformers model, as ``longctx train`` for extension saves it,
  where ``benchmarks/cream_compare.py --runs DEST`` looks (add the RoPE-only baseline with
  ``longctx train --recipe recipes/smollm2-135m-cream.yaml --steps 0 --out DEST/smollm2-rope``)
* ``DEST/logs/``: the bundle (logs, settings, summary.json)
"""

from __future__ import annotations

import json
import shutil
import sys
import tarfile
from pathlib import Path


def main(src: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    logs = dest / "logs"
    with tarfile.open(src / "bundle.tar.gz") as tf:
        tf.extractall(logs, filter="data")
    print("summary:", (logs / "summary.json").read_text() if (logs / "summary.json").exists() else "none")
    shards = sorted(src.glob("adapter*.safetensors"))
    if shards:
        out = dest / "beacon-adapter"
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(logs / "beacon-adapter", out)
        for f in shards:
            shutil.copy(f, out / f.name)
        print("beacon adapter:", out)
    for lora_tar in sorted(src.glob("*-lora.tar")):
        method = lora_tar.name.removesuffix("-lora.tar")
        with tarfile.open(lora_tar) as tf:
            tf.extractall(dest, filter="data")
        print(f"{method}:", merge(dest / f"{method}-lora", json.loads((logs / f"{method}-extend_config.json").read_text()),
                                  dest / f"smollm2-{method}" / "model"))


def merge(lora: Path, settings: dict, out: Path) -> Path:
    """The base with RoPE scaled to the run's target and the LoRA merged, saved as a stock model."""
    import torch
    from peft import PeftModel

    from longctx import compat
    from longctx.models import load_model
    from longctx.positions import scale_rope

    model, tok = load_model(settings["model"], dtype="fp32", device="cpu")
    if settings.get("train_length"):  # the smoke test trains a shortened window (gpu_jobs.py)
        compat.text_config(model).max_position_embeddings = settings["train_length"]
    scale_rope(compat.text_config(model), settings["target_length"], settings["rope"])
    compat.refresh_rotary(model)
    model = PeftModel.from_pretrained(model, lora).merge_and_unload()
    model.to(torch.bfloat16).save_pretrained(out)
    tok.save_pretrained(out)
    return out


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2] if len(sys.argv) > 2 else "runs/gpu"))
