"""Beacon training (Activation Beacon paper, section 3; docs/training.md): compression-based auto-regression with the LLM frozen.

Every base weight is frozen and only the beacon embedding and projections train. Each
sequence is streamed window by window with gradients flowing through the beacon memory; the
loss is the fp32 mean over all valid tokens (labels shifted once over the sequence, beacons
carry none). Ratios are drawn per window from (seed, step, window), so all ranks agree.

The loop is :mod:`longctx.train.engine` (accelerate): launch with ``accelerate launch
--config_file recipes/accelerate/<setup>.yaml`` (DDP, FSDP2, DeepSpeed ZeRO-2) or ``torchrun``;
what DDP and FSDP wrap is :class:`BeaconStream`, the module whose forward streams a batch.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from longctx import compat
from longctx.beacon import BeaconAdapter, BeaconConfig, BeaconModel
from longctx.beacon.config import continue_training, training_beacon
from longctx.train.checkpoint import latest_checkpoint, load_weights
from longctx.train.data import group_by_windows, make_sequences, read_records, retrieval_sequences
from longctx.train.engine import Engine, Loop, StepResult
from longctx.train.memory_tasks import copy_sequences, recall_sequences
from longctx.typed import build, check_positive, check_types, from_yaml, opt

FLAT_BEACON = ("window", "ratios", "ratio_mix", "projections", "sink", "embed_init")  # before the beacon section


@dataclass
class TrainConfig:
    """A beacon training run (recipes/*.yaml hold these keys; ``beacon:`` is a section of its own)."""

    model: str = opt("smollm2-135m", help="base model: hub id, local directory or the embedded default")
    data: list[str] = opt(factory=lambda: ["moby-dick"], help="files/folders of .txt/.jsonl, 'moby-dick', 'sotu', "
                                                              "or hf:NAME[:split]")
    out: str = opt("runs/beacon", help="output folder (checkpoints, log.jsonl, adapter/); a rerun resumes it")
    adapter: str | None = opt(None, help="start from this adapter instead of copy-initialising (its projections, "
                                         "placement, scheme, attend_prev and embed_init are kept)")
    beacon: BeaconConfig = opt(factory=training_beacon, help="beacon settings trained (the run's seed seeds ratio draws)")
    min_length: int = opt(1024, help="shortest training sequence in tokens")
    max_length: int = opt(2048, help="longest training sequence (longer texts are cut)")
    batch_size: int = opt(1, help="sequences per step (grouped to the same number of windows)")
    steps: int = opt(100, help="optimizer steps in total")
    lr: float = opt(1e-4, help="peak learning rate (cosine schedule after warm-up)")
    warmup: int = opt(10, help="warm-up steps")
    weight_decay: float = opt(0.0, help="AdamW weight decay")
    grad_clip: float = opt(1.0, help="gradient norm clip")
    seed: int = opt(0, help="seed of data order and ratio draws")
    dtype: str = opt("bf16", help="base model dtype")
    beacon_dtype: str = opt("fp32", help="dtype of the trainable beacon weights")
    checkpointing: bool = opt(False, help="non-reentrant activation checkpointing of every decoder layer")
    save_every: int = opt(50, help="checkpoint every N steps (atomic)")
    log_every: int = opt(1, help="log every N steps")
    stop_after: int | None = opt(None, help="end this run after N steps (resume later)")
    time_limit: float | None = opt(None, help="minutes: checkpoint, write the adapter and stop once exceeded")
    save_minutes: float | None = opt(None, help="also checkpoint whenever this many minutes passed since the last one")
    holdout: list[str] = opt(factory=list, help="sources never trained on (substring match)")
    retrieval: int = opt(0, help="synthetic retrieval sequences added to the text (loss on the answers only)")
    recall: int = opt(0, help="multi-fact recall sequences (train/memory_tasks.py)")
    recall_kinds: list[str] | None = opt(None, help="value kinds of the recall facts (default: all)")
    recall_facts: int = opt(6, help="at most this many facts per recall sequence")
    recall_loss: str = opt("answer", help="recall loss on the whole 'answer' or on its 'values' alone")
    text_sequences: int | None = opt(None, help="at most this many prose sequences (seeded sample; default: all)")
    copy: int = opt(0, help="span-copy sequences (train/memory_tasks.py)")
    distill: float = opt(0.0, help="on text: weight of KL from the frozen model's full-attention predictions "
                                   "(1 = KL only)")
    fsdp: bool = opt(False, help="FSDP2 over the ranks: the base's decoder layers and the adapter sharded "
                                 "(also on when launched with an accelerate FSDP config)")
    every_rank_writes: bool = opt(False, help="each rank writes its own log and final adapter (checks)")

    def beacon_config(self) -> BeaconConfig:
        """The beacon settings this run trains (ratio draws seeded by the run's seed)."""
        return self.beacon.replace(seed=self.seed)

    def __post_init__(self) -> None:
        check_types(self)
        for name in ("steps", "batch_size", "save_every", "log_every", "min_length", "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig: {name} must be at least 1, got {getattr(self, name)}")
        if self.max_length < self.min_length:
            raise ValueError(f"TrainConfig: max_length {self.max_length} is below min_length {self.min_length}")
        check_positive(self, ("lr", "time_limit", "save_minutes"))

    @classmethod
    def from_yaml(cls, path: str, **overrides: Any) -> TrainConfig:
        return from_yaml(cls, path, overrides)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "TrainConfig") -> TrainConfig:
        """From a mapping (a recipe, a saved ``train_config.json``; flat beacon keys of older runs
        are read into the beacon section)."""
        return build(cls, upgrade_saved(data), where)


def upgrade_saved(data: dict[str, Any]) -> dict[str, Any]:
    """A saved run's settings in today's shape: older runs kept window, ratios, ... at the top,
    and a ``zero`` key (ZeRO-2 is now a DeepSpeed launch config, recipes/accelerate/)."""
    if data.get("zero") not in (None, 0):
        raise ValueError(f"zero: {data['zero']} is no longer a recipe key: launch with "
                         "'accelerate launch --config_file recipes/accelerate/zero2-8gpu.yaml' instead")
    data = {k: v for k, v in data.items() if k != "zero"}
    if "beacon" in data or not any(k in data for k in FLAT_BEACON):
        return data
    beacon = {k: data.pop(k) for k in FLAT_BEACON if k in data}
    return {**data, "beacon": {**training_beacon().to_dict(), **beacon}}


class BeaconStream(nn.Module):
    """What DDP and FSDP wrap: the base model with its adapter (the adapter's weights are the
    trainable ones), and a forward that streams one batch and returns its mean loss."""

    def __init__(self, bm: BeaconModel):
        super().__init__()
        self.bm = bm

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor, sequence: int,
                distill: float = 0.0) -> tuple[torch.Tensor, list[int]]:
        """(mean loss over the target tokens, windows read per sample)."""
        bm = self.bm
        bm.reset(sequence=sequence)
        teacher = teacher_logits(bm.model, ids, mask) if distill else None
        pure = distill >= 1.0  # KL only: no next-token loss (and no LM-head pass for it) to weigh by 0
        out = bm(ids, attention_mask=mask, labels=None if pure else labels, logits="all" if distill else "none")
        if pure:
            loss = distill_loss(out.logits, teacher, labels)
        elif distill:
            loss = distill * distill_loss(out.logits, teacher, labels) + (1 - distill) * out.loss
        else:
            loss = out.loss
        return loss, [s.windows_done for s in bm.memory.samples]


def train(cfg: TrainConfig, model=None, tokenizer=None) -> Path:
    """Train (or resume) a beacon adapter; returns the output directory with ``adapter/``."""
    from longctx.models import load_model, parse_dtype

    out = Path(cfg.out)
    engine = Engine(Loop(out=out, steps=cfg.steps, lr=cfg.lr, warmup=cfg.warmup, grad_clip=cfg.grad_clip,
                         weight_decay=cfg.weight_decay, save_every=cfg.save_every, log_every=cfg.log_every,
                         stop_after=cfg.stop_after, time_limit=cfg.time_limit, save_minutes=cfg.save_minutes,
                         bf16=cfg.dtype == "bf16", fsdp=cfg.fsdp, every_rank_writes=cfg.every_rank_writes,
                         meta={"seed": cfg.seed}))
    world = engine.world
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    if model is None:
        model, tokenizer = load_model(cfg.model, dtype=cfg.dtype)
    beacon_cfg = cfg.beacon_config()
    if cfg.adapter:
        adapter = BeaconAdapter.load(cfg.adapter, model, dtype=parse_dtype(cfg.beacon_dtype))
        beacon_cfg = continue_training(beacon_cfg, adapter.config)
    else:
        adapter = BeaconAdapter.from_model(model, beacon_cfg, dtype=parse_dtype(cfg.beacon_dtype))
    adapter.config = beacon_cfg
    bm = BeaconModel(model, tokenizer, adapter)
    n_train = bm.freeze_base()
    model.train()
    bm.set_checkpointing(cfg.checkpointing)
    seqs = _training_sequences(cfg, tokenizer, beacon_cfg.window)
    batches = group_by_windows([len(s["input_ids"]) for s in seqs], beacon_cfg.window, cfg.batch_size, cfg.seed,
                               world)
    if len(batches) < world:
        raise ValueError(f"{len(batches)} batches cannot feed {world} ranks")
    start = engine.setup(BeaconStream(bm), adapter, run_file=out / "train_config.json", settings=asdict(cfg),
                         may_change=RESUME_MAY_CHANGE, upgrade=upgrade_saved, shard_layers=compat.layers(model))
    if engine.rank == 0:
        print(f"trainable beacon parameters: {n_train:,} (base model frozen); {len(seqs)} sequences, "
              f"{len(batches)} batches; base model in {cfg.dtype} (recipe), beacons in {cfg.beacon_dtype}; "
              f"{engine.strategy} over {world} process(es); starting at step {start}", flush=True)

    def step(i: int, stream: nn.Module) -> StepResult:
        items = [seqs[j] for j in batches[(i * world + engine.rank) % len(batches)]]
        ids, labels, mask = (t.to(bm.device) for t in _collate(items))
        distill = cfg.distill if all(x.get("kind", "text") == "text" for x in items) else 0.0
        loss, windows = stream(ids, mask, labels, sequence=i, distill=distill)
        drawn = _drawn_ratios(bm, ids.shape[1])
        tokens = int(mask.sum())
        return StepResult(loss, int((labels[:, 1:] != -100).sum()),
                          row={"tokens": tokens, "kind": items[0].get("kind", "text"), "ratios": drawn,
                               "windows": windows},
                          postfix={"ratio": drawn[-1] if drawn else "-"})

    finished = engine.run(step)
    engine.unshard()
    if engine.writer and finished:
        adapter.save(out / "adapter")
    bm.detach()
    model.eval()
    return out


def _training_sequences(cfg: TrainConfig, tokenizer, window: int) -> list[dict]:
    """Prose cut to the run's lengths plus the synthetic memory tasks it asks for."""
    records = [r for r in read_records(cfg.data) if not any(h in r.get("source", "") for h in cfg.holdout)]
    seqs = make_sequences(iter(records), tokenizer, cfg.min_length, cfg.max_length)
    texts = [r["text"] for r in records if "text" in r]
    if cfg.text_sequences is not None and len(seqs) > cfg.text_sequences:
        seqs = random.Random(cfg.seed).sample(seqs, cfg.text_sequences)
    if cfg.retrieval:
        seqs += retrieval_sequences(tokenizer, cfg.retrieval, cfg.min_length, cfg.max_length, cfg.seed, texts)
    if cfg.recall:
        seqs += recall_sequences(tokenizer, cfg.recall, cfg.min_length, cfg.max_length, cfg.seed, texts,
                                 max_facts=cfg.recall_facts, open_window=window, kinds=cfg.recall_kinds,
                                 loss_on=cfg.recall_loss)
    if cfg.copy:
        seqs += copy_sequences(tokenizer, cfg.copy, cfg.min_length, cfg.max_length, cfg.seed, texts,
                               open_window=window)
    if not seqs:
        raise ValueError(f"no training sequences of at least {cfg.min_length} tokens in {cfg.data}")
    return seqs


def export_adapter(run: str | Path, out: str | Path, model=None, step: int | None = None,
                   dtype: torch.dtype | None = torch.bfloat16) -> Path:
    """Write an adapter folder from a training run's checkpoint (the latest, or ``step``), e.g. to
    evaluate a run in progress or ship one stopped early."""
    from longctx.models import load_model

    run = Path(run)
    cfg = TrainConfig.from_dict(json.loads((run / "train_config.json").read_text()), f"{run}/train_config.json")
    ckpt = latest_checkpoint(run) if step is None else run / "checkpoints" / f"step-{step:08d}"
    if ckpt is None or not ckpt.exists():
        raise FileNotFoundError(f"no checkpoint in {run}" + (f" for step {step}" if step else ""))
    if model is None:
        model, _ = load_model(cfg.model, dtype=cfg.dtype, with_tokenizer=False)
    beacon_cfg = cfg.beacon_config()
    if cfg.adapter and Path(cfg.adapter).exists():  # the structure of the adapter the run continued
        from longctx.beacon.adapter import saved_config

        beacon_cfg = continue_training(beacon_cfg, saved_config(cfg.adapter))
    adapter = BeaconAdapter.from_model(model, beacon_cfg, dtype=torch.float32)
    load_weights(ckpt, adapter)
    return adapter.save(out, dtype=dtype)


# settings a resumed run may change; every other one must match the run being resumed
RESUME_MAY_CHANGE = {"steps", "stop_after", "save_every", "log_every", "time_limit", "save_minutes",
                     "every_rank_writes", "checkpointing"}


@torch.no_grad()
def teacher_logits(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The frozen model's own full-attention logits over the raw sequence (adapter idle)."""
    pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
    return model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """Mean KL(teacher || student) of next-token distributions over positions with a label,
    computed in fp32 chunks."""
    valid = labels[:, 1:] != -100
    s, t = student[:, :-1][valid], teacher[:, :-1][valid]
    total = student.new_zeros((), dtype=torch.float32)
    for i in range(0, s.shape[0], chunk):  # recomputed in backward: no fp32 [rows, vocab] copies kept per chunk
        total = total + checkpoint(_kl_sum, s[i : i + chunk], t[i : i + chunk], use_reentrant=False)
    return total / max(int(valid.sum()), 1)


def _kl_sum(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    ls = torch.log_softmax(student.float(), -1)
    lt = torch.log_softmax(teacher.float(), -1)
    return (lt.exp() * (lt - ls)).sum()


def _drawn_ratios(bm: BeaconModel, length: int) -> list[int]:
    from longctx.beacon.plan import RatioChooser

    ch = RatioChooser(bm.config)
    inst = bm.memory.samples[0].instance_ratio
    return [ch.window_ratio(bm.memory.sequence, w, inst) for w in range(-(-length // bm.config.window))]


def _collate(items: list[dict]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-pad a batch: ids, labels (-100 on padding), attention mask."""
    n = max(len(x["input_ids"]) for x in items)
    ids = torch.zeros(len(items), n, dtype=torch.long)
    labels = torch.full((len(items), n), -100, dtype=torch.long)
    mask = torch.zeros(len(items), n, dtype=torch.long)
    for b, x in enumerate(items):
        k = len(x["input_ids"])
        ids[b, n - k :] = torch.tensor(x["input_ids"])
        labels[b, n - k :] = torch.tensor(x["labels"])
        mask[b, n - k :] = 1
    return ids, labels, mask
