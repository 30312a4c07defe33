"""Text conversations over a beacon memory, and memory files (compress once, ask many).

``BeaconModel.read``/``ask``/``save_memory``/``load_memory`` call these; they use only the
model's public streaming surface (``forward``, ``generate``, ``memory``, ``reset``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from longctx import compat
from longctx.beacon.memory import BeaconMemory
from longctx.chat import chat_parts
from longctx.safefiles import module_fingerprint, tensor_checksum

if TYPE_CHECKING:
    from longctx.beacon.model import BeaconModel


def need_tokenizer(bm: BeaconModel) -> Any:
    if bm.tokenizer is None:
        raise ValueError("this BeaconModel has no tokenizer; pass one to use text helpers")
    return bm.tokenizer


def _feed_text(bm: BeaconModel, text: str, progress: bool = False) -> None:
    ids = need_tokenizer(bm)(text, return_tensors="pt", add_special_tokens=False).input_ids.to(bm.device)
    with torch.no_grad():
        bm(ids, logits="none", progress=progress)


def read(bm: BeaconModel, context: str, progress: bool = False) -> int:
    """Start a conversation whose first user turn begins with ``context``; returns tokens read."""
    bm.reset()
    _feed_text(bm, chat_parts(need_tokenizer(bm))["pre"] + context, progress=progress)
    bm.memory.meta["turns"] = 0
    return bm.tokens_read()[0]


def ask(bm: BeaconModel, question: str, context: str | None = None, progress: bool = False, **gen: Any) -> str:
    """Answer ``question`` about the text read so far (``context`` starts a new conversation);
    the memory keeps the conversation, so later questions reuse it (multi-turn)."""
    tok = need_tokenizer(bm)
    parts = chat_parts(tok)
    if context is not None or bm.memory is None:
        read(bm, context or "", progress=progress)
    meta = bm.memory.meta
    turns = meta.get("turns", 0)
    if turns == 0:
        text = parts["mid"] + question + parts["post"] if bm.tokens_read()[0] > 0 else question + parts["post"]
    else:
        sep = parts["next_pre"]
        eos_text = tok.decode([meta["last_token"]]) if meta.get("last_token") is not None else ""
        if eos_text and sep.startswith(eos_text) and meta.get("ended_with_eos"):
            sep = sep[len(eos_text):]
        text = sep + question + parts["post"]
    ids = tok(text, return_tensors="pt", add_special_tokens=False).input_ids.to(bm.device)
    new = bm.generate(ids, progress=progress, **gen)[0]
    eos = bm.eos_ids(gen.get("eos_token_id"))
    bm.memory.meta.update(turns=turns + 1, last_token=int(new[-1]) if new.numel() else None,
                          ended_with_eos=bool(new.numel() and int(new[-1]) in eos))
    return tok.decode(new, skip_special_tokens=True).strip()


def identity(bm: BeaconModel) -> dict[str, str]:
    """Fingerprints a saved memory records: the adapter's weights and the base model's."""
    return {"base model": module_fingerprint(bm.model, exclude=bm.adapter),
            "adapter": tensor_checksum(dict(bm.adapter.state_dict()))[:32]}


def save_memory(bm: BeaconModel, path: str | Path) -> Path:
    """Save the compressed memory to one safetensors file."""
    if bm.memory is None:
        raise ValueError("nothing to save: the memory is empty")
    return bm.memory.save(path, bm.config, compat.model_signature(bm.model), identity(bm))


def load_memory(bm: BeaconModel, path: str | Path) -> None:
    """Load a memory made with this adapter and base model (checked); its beacon settings become
    the current ones, its tensors take the model's dtype."""
    dtype = compat.embed_tokens(bm.model).weight.dtype
    memory, cfg = BeaconMemory.load(path, compat.model_signature(bm.model), bm.device, identity=identity(bm), dtype=dtype)
    bm.adopt_memory(memory, cfg)
