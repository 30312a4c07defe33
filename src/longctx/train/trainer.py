"""Beacon training (Activation Beacon paper, section 3; docs/training.md): compression-based auto-regression with the LLM frozen.

Every base weight is frozen and only the beacon embedding and projections train. Each
sequence is streamed window by window with gradients flowing through the beacon memory; the
loss is the fp32 mean over all valid tokens (labels shifted once over the sequence, beacons
carry none). Ratios are drawn per window from (seed, step, window), so all ranks agree.

Distributed runs: launch with ``torchrun`` or ``accelerate launch``; the adapter's gradients
are all-reduced explicitly (the adapter is driven through the base model's own forward, which
a DDP wrapper around the adapter would never see).
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from longctx.beacon import BeaconAdapter, BeaconConfig, BeaconModel
from longctx.beacon.config import continue_training, training_beacon
from longctx.train.checkpoint import (
    check_resumable,
    latest_checkpoint,
    load_checkpoint,
    load_weights,
    save_checkpoint,
    truncate_log,
)
from longctx.train.data import group_by_windows, make_sequences, read_records, retrieval_sequences
from longctx.train.fsdp import shard_base_layers
from longctx.train.memory_tasks import copy_sequences, recall_sequences
from longctx.train.zero import GradSync
from longctx.typed import build, check_types, from_yaml, opt

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
    text_sequences: int | None = opt(None, help="at most this many prose sequences (seeded sample; default: all)")
    copy: int = opt(0, help="span-copy sequences (train/memory_tasks.py)")
    distill: float = opt(0.0, help="on text: weight of KL from the frozen model's full-attention predictions "
                                   "(1 = KL only)")
    zero: int = opt(0, help="2: shard adapter gradients and optimizer states across ranks (ZeRO-2); 0: replicate")
    fsdp: bool = opt(False, help="shard the frozen base model's decoder layers across ranks (FSDP2)")
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
        for name in ("lr", "time_limit", "save_minutes"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise ValueError(f"TrainConfig: {name} must be positive, got {v}")
        if self.zero not in (0, 2):
            raise ValueError(f"TrainConfig: zero must be 0 or 2, got {self.zero}")

    @classmethod
    def from_yaml(cls, path: str, **overrides: Any) -> TrainConfig:
        return from_yaml(cls, path, overrides)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "TrainConfig") -> TrainConfig:
        """From a mapping (a recipe, a saved ``train_config.json``; flat beacon keys of older runs
        are read into the beacon section)."""
        return build(cls, upgrade_saved(data), where)


def upgrade_saved(data: dict[str, Any]) -> dict[str, Any]:
    """A saved run's settings in today's shape: older runs kept window, ratios, ... at the top."""
    if "beacon" in data or not any(k in data for k in FLAT_BEACON):
        return data
    data = dict(data)
    beacon = {k: data.pop(k) for k in FLAT_BEACON if k in data}
    return {**data, "beacon": {**training_beacon().to_dict(), **beacon}}


def dist_rank_world() -> tuple[int, int]:
    """(rank, world size); joins the process group when launched by torchrun/accelerate."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        if torch.cuda.is_available():  # one GPU per process: "cuda" then means this rank's own card
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _lr_factor(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def train(cfg: TrainConfig, model=None, tokenizer=None) -> Path:
    """Train (or resume) a beacon adapter; returns the output directory with ``adapter/``."""
    from longctx.models import load_model, parse_dtype

    rank, world = dist_rank_world()
    out = Path(cfg.out)
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
    if cfg.fsdp and world > 1:
        shard_base_layers(model, adapter.parameters(), world)
    model.train()
    bm.set_checkpointing(cfg.checkpointing)
    records = [r for r in read_records(cfg.data) if not any(h in r.get("source", "") for h in cfg.holdout)]
    seqs = make_sequences(iter(records), tokenizer, cfg.min_length, cfg.max_length)
    texts = [r["text"] for r in records if "text" in r]
    if cfg.text_sequences is not None and len(seqs) > cfg.text_sequences:
        seqs = random.Random(cfg.seed).sample(seqs, cfg.text_sequences)
    if cfg.retrieval:
        seqs += retrieval_sequences(tokenizer, cfg.retrieval, cfg.min_length, cfg.max_length, cfg.seed, texts)
    if cfg.recall:
        seqs += recall_sequences(tokenizer, cfg.recall, cfg.min_length, cfg.max_length, cfg.seed, texts,
                                 max_facts=cfg.recall_facts, open_window=beacon_cfg.window, kinds=cfg.recall_kinds)
    if cfg.copy:
        seqs += copy_sequences(tokenizer, cfg.copy, cfg.min_length, cfg.max_length, cfg.seed, texts,
                               open_window=beacon_cfg.window)
    if not seqs:
        raise ValueError(f"no training sequences of at least {cfg.min_length} tokens in {cfg.data}")
    batches = group_by_windows([len(s["input_ids"]) for s in seqs], beacon_cfg.window, cfg.batch_size, cfg.seed, world)
    if len(batches) < world:
        raise ValueError(f"{len(batches)} batches cannot feed {world} ranks")
    sync = GradSync(list(adapter.parameters()), rank, world, cfg.zero)
    opt = torch.optim.AdamW(sync.local(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start = 0
    ckpt = latest_checkpoint(out)
    if ckpt is not None:
        check_resumable(out / "train_config.json", asdict(cfg), RESUME_MAY_CHANGE, upgrade=upgrade_saved)
        start = load_checkpoint(ckpt, adapter, opt, rank, sync.sharded)["step"]
    if rank == 0:
        (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))
        print(f"trainable beacon parameters: {n_train:,} (base model frozen); {len(seqs)} sequences, "
              f"{len(batches)} batches; base model in {cfg.dtype} (recipe), beacons in {cfg.beacon_dtype}; "
              f"starting at step {start}", flush=True)
    writer = rank == 0 or cfg.every_rank_writes
    if writer:
        truncate_log(out / "log.jsonl", start)
    log = (out / "log.jsonl").open("a") if writer else None
    began = last_save = time.perf_counter()
    stopped = False
    end = cfg.steps if cfg.stop_after is None else min(cfg.steps, start + cfg.stop_after)
    bar = tqdm(range(start, end), initial=start, total=cfg.steps, desc="train", disable=rank != 0)
    for step in bar:
        t = time.perf_counter()
        batch_idx = batches[(step * world + rank) % len(batches)]
        items = [seqs[i] for i in batch_idx]
        ids, labels, mask = _collate(items)
        kind = items[0].get("kind", "text")
        for g in opt.param_groups:
            g["lr"] = cfg.lr * _lr_factor(step, cfg)
        bm.reset(sequence=step)
        distill = cfg.distill if all(x.get("kind", "text") == "text" for x in items) else 0.0
        with torch.autocast(device_type=bm.device.type, dtype=torch.bfloat16, enabled=cfg.dtype == "bf16"):
            teacher = teacher_logits(model, ids.to(bm.device), mask.to(bm.device)) if distill else None
            outp = bm(ids.to(bm.device), attention_mask=mask.to(bm.device), labels=labels.to(bm.device),
                      logits="all" if distill else "none")
            if distill:
                kl = distill_loss(outp.logits, teacher, labels.to(bm.device))
                outp.loss = distill * kl + (1 - distill) * outp.loss
        windows = [s.windows_done for s in bm.memory.samples]
        drawn = _drawn_ratios(bm, ids.shape[1])
        outp.loss.backward()
        sync.reduce()
        gnorm = sync.clip(cfg.grad_clip)
        opt.step()
        adapter.zero_grad(set_to_none=True)
        sync.broadcast()
        dt = time.perf_counter() - t
        tokens = int(mask.sum())
        row = {"step": step + 1, "loss": float(outp.loss.detach()), "tokens": tokens, "tokens_per_s": tokens / dt,
               "lr": opt.param_groups[0]["lr"], "grad_norm": gnorm, "kind": kind, "ratios": drawn, "windows": windows}
        if log is not None and (step + 1) % cfg.log_every == 0:
            log.write(json.dumps(row) + "\n")
            log.flush()
        bar.set_postfix(loss=f"{row['loss']:.3f}", tok_s=f"{row['tokens_per_s']:.0f}", ratio=drawn[-1] if drawn else "-")
        now = time.perf_counter()
        stopped = _agree(cfg.time_limit is not None and now - began > 60 * cfg.time_limit, world)
        due = _agree(cfg.save_minutes is not None and now - last_save > 60 * cfg.save_minutes, world)
        if (rank == 0 or sync.sharded) and ((step + 1) % cfg.save_every == 0 or step + 1 == end or stopped or due):
            save_checkpoint(out, step + 1, adapter, opt, {"seed": cfg.seed}, rank=rank, world=world,
                            sharded=sync.sharded)
            last_save = time.perf_counter()
        if stopped:
            print(f"time limit of {cfg.time_limit} min reached after step {step + 1}", flush=True)
            break
    bar.close()
    if world > 1:
        dist.barrier()
    if writer and (end == cfg.steps or stopped):
        adapter.save(out / "adapter")
    bm.detach()
    model.eval()
    return out


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


def _agree(flag: bool, world: int) -> bool:
    """True on every rank if it is true on any (time limits must stop all ranks at one step)."""
    if world == 1:
        return flag
    t = torch.tensor([float(flag)], device="cuda" if torch.cuda.is_available() else "cpu")
    dist.all_reduce(t)
    return bool(t.item() > 0)


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
    for i in range(0, s.shape[0], chunk):
        ls = torch.log_softmax(s[i : i + chunk].float(), -1)
        lt = torch.log_softmax(t[i : i + chunk].float(), -1)
        total = total + (lt.exp() * (lt - ls)).sum()
    return total / max(int(valid.sum()), 1)


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
