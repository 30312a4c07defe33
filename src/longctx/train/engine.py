"""One training loop for every run (beacon adapters, context extension), on ``accelerate``.

A run hands the engine a module whose ``forward`` computes the loss and a step function; the
engine owns the rest: process group and device (``accelerate.Accelerator``), resume, the run's
settings file, the log, warm-up and schedule, autocast, backward, gradient clipping, the
optimizer step, time limits and atomic checkpoints.

How the ranks share work follows the launch (``accelerate launch --config_file
recipes/accelerate/<setup>.yaml``, ``torchrun``, or one plain process):

* one process: plain training.
* several processes, DDP: ``accelerator.prepare`` wraps the module in
  DistributedDataParallel, which averages the gradients of its trainable parameters.
* FSDP2 (an accelerate FSDP config, or ``fsdp: true`` in a recipe): the given decoder layers
  are sharded with ``fully_shard`` (their frozen weights; trainable ones inside them are left
  to the module), then the module itself, whose trainable parameters (a beacon adapter, LoRA
  weights) are sharded with their gradients and optimizer states. The same code runs on CPUs
  (gloo) and GPUs; accelerate's own FSDP preparation is not used because it runs on GPUs only
  and shards a model's own forward, while the beacon stream calls the layers window by window.
* DeepSpeed (an accelerate DeepSpeed config, GPUs): ``accelerator.prepare`` hands the module
  and optimizer to DeepSpeed (ZeRO-2 shards gradients and optimizer states); checkpoints are
  accelerate's ``save_state`` folders, renamed into place.

Every rank computes its loss as a sum over its tokens divided by the tokens of the whole
global batch, so N ranks with batch b train exactly like one process with batch N*b.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from longctx.train.checkpoint import (
    PREFIX,
    check_resumable,
    latest_checkpoint,
    load_checkpoint,
    optimizer_state,
    publish,
    save_checkpoint,
    truncate_log,
    whole,
)


@dataclass
class Loop:
    """The loop's settings (a run's config maps its own fields onto these)."""

    out: Path
    steps: int
    lr: float
    warmup: int = 10
    schedule: str = "cosine"  # after warm-up: "cosine" to 0, or "constant"
    grad_clip: float | None = 1.0
    weight_decay: float = 0.0
    save_every: int = 50
    log_every: int = 1
    stop_after: int | None = None
    time_limit: float | None = None  # minutes
    save_minutes: float | None = None
    bf16: bool = False  # autocast the step in bf16
    fsdp: bool = False  # shard even when the launch did not ask for FSDP
    every_rank_writes: bool = False
    desc: str = "train"
    meta: dict[str, Any] = field(default_factory=dict)  # stored in every checkpoint

    def lr_at(self, step: int) -> float:
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        if self.schedule == "constant":
            return self.lr
        progress = (step - self.warmup) / max(1, self.steps - self.warmup)
        return self.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@dataclass
class StepResult:
    """What a step function returns: the mean loss over its ``count`` target tokens, the extra
    log fields and the progress-bar fields."""

    loss: torch.Tensor
    count: int
    row: dict[str, Any] = field(default_factory=dict)
    postfix: dict[str, Any] = field(default_factory=dict)


class Engine:
    """``Engine(loop)`` joins the ranks; ``setup`` prepares module, optimizer and resume;
    ``run(step_fn)`` trains; ``full_state`` gives whole tensors back after sharded training."""

    def __init__(self, loop: Loop):
        from accelerate import Accelerator

        self.loop = loop
        self.accelerator = Accelerator(cpu=not torch.cuda.is_available())
        self.rank = self.accelerator.process_index
        self.world = self.accelerator.num_processes
        self.device = self.accelerator.device
        kind = self.accelerator.distributed_type.value
        self.deepspeed = kind == "DEEPSPEED"
        self.fsdp = self.world > 1 and (loop.fsdp or kind == "FSDP"
                                        or os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true")
        self.strategy = ("fsdp2" if self.fsdp else "deepspeed" if self.deepspeed
                         else "ddp" if self.world > 1 else "single")
        self.start = 0

    @property
    def writer(self) -> bool:
        return self.rank == 0 or self.loop.every_rank_writes

    def setup(self, module: nn.Module, state: nn.Module, *, run_file: Path, settings: dict[str, Any],
              may_change: set[str], upgrade: Callable | None = None, shard_layers: Iterable[nn.Module] = ()) -> int:
        """Wrap or shard ``module`` for the launch, build AdamW over its trainable parameters,
        resume from the latest checkpoint of ``state`` (the trainable weights that are saved)
        and write the run's settings. Returns the step training starts at."""
        self.state = state
        trainable = [p for p in module.parameters() if p.requires_grad]
        if self.fsdp:
            layers = list(shard_layers)
            whole = sum(p.numel() for layer in layers for p in layer.parameters() if not p.requires_grad)
            _shard(module, layers, trainable, self.world)
            held = local_numel(p for layer in layers for p in layer.parameters() if not p.requires_grad)
            mine = local_numel(p for p in module.parameters() if p.requires_grad)
            print(f"fsdp2: rank {self.rank} holds {held:,} of {whole:,} frozen layer weights and {mine:,} of "
                  f"{sum(p.numel() for p in trainable):,} trainable ones", flush=True)
            trainable = [p for p in module.parameters() if p.requires_grad]  # now sharded
        self.params = trainable
        self.optimizer = torch.optim.AdamW(trainable, lr=self.loop.lr, weight_decay=self.loop.weight_decay)
        self.module, self.stepper = module, self.optimizer
        if self.world > 1 and not self.fsdp:  # DDP or DeepSpeed
            self.module, self.stepper = self.accelerator.prepare(module, self.optimizer)
        ckpt = latest_checkpoint(self.loop.out)
        if ckpt is not None:
            check_resumable(run_file, settings, may_change, upgrade=upgrade)
            if self.deepspeed:
                self.accelerator.load_state(str(ckpt / "accelerate"))
                self.start = json.loads((ckpt / "state.json").read_text())["step"]
            else:
                self.start = load_checkpoint(ckpt, state, self.optimizer)["step"]
        if self.rank == 0:
            run_file.parent.mkdir(parents=True, exist_ok=True)
            run_file.write_text(json.dumps(settings, indent=2))
        if self.writer:
            truncate_log(self.loop.out / "log.jsonl", self.start)
        return self.start

    # ------------------------------------------------------------------ the loop
    def run(self, step_fn: Callable[[int, nn.Module], StepResult]) -> bool:
        """Train from the resumed step; True when the run ended (all steps, or its time limit)."""
        loop = self.loop
        log = (loop.out / "log.jsonl").open("a") if self.writer else None
        began = last_save = time.perf_counter()
        end = loop.steps if loop.stop_after is None else min(loop.steps, self.start + loop.stop_after)
        stopped = False
        bar = tqdm(range(self.start, end), initial=self.start, total=loop.steps, desc=loop.desc,
                   disable=self.rank != 0)
        for step in bar:
            t = time.perf_counter()
            for g in self.optimizer.param_groups:
                g["lr"] = loop.lr_at(step)
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=loop.bf16):
                res = step_fn(step, self.module)
            total = self._sum(float(res.count))
            self.accelerator.backward(res.loss * (res.count * self.world / max(total, 1.0)))
            gnorm = self._clip()
            self.stepper.step()
            self.stepper.zero_grad(set_to_none=True)
            dt = time.perf_counter() - t
            row = {"step": step + 1, "loss": float(res.loss.detach()), **res.row, "seconds": dt,
                   "lr": self.optimizer.param_groups[0]["lr"], "grad_norm": gnorm}
            if "tokens" in row:
                row["tokens_per_s"] = row["tokens"] / dt
                res.postfix.setdefault("tok_s", f"{row['tokens_per_s']:.0f}")
            if log is not None and (step + 1) % loop.log_every == 0:
                log.write(json.dumps(row) + "\n")
                log.flush()
            bar.set_postfix(loss=f"{row['loss']:.3f}", **res.postfix)
            now = time.perf_counter()
            stopped = self._any(loop.time_limit is not None and now - began > 60 * loop.time_limit)
            due = self._any(loop.save_minutes is not None and now - last_save > 60 * loop.save_minutes)
            if (step + 1) % loop.save_every == 0 or step + 1 == end or stopped or due:
                self.save(step + 1)
                last_save = time.perf_counter()
            if stopped:
                if self.rank == 0:
                    print(f"time limit of {loop.time_limit} min reached after step {step + 1}", flush=True)
                break
        bar.close()
        if log is not None:
            log.close()
        if self.world > 1:
            dist.barrier()
        return end == loop.steps or stopped

    def save(self, step: int) -> Path:
        """An atomic checkpoint of the trainable weights and optimizer state after ``step``."""
        if self.deepspeed:
            return self._save_accelerate(step)
        weights, opt = self.full_state(), optimizer_state(self.state, self.optimizer)
        if self.rank == 0:
            return save_checkpoint(self.loop.out, step, weights, opt, self.loop.meta)
        return self.loop.out / "checkpoints" / f"{PREFIX}{step:08d}"

    def full_state(self) -> dict[str, torch.Tensor]:
        """The trainable weights, whole on every rank (a collective under FSDP)."""
        return {k: whole(v).detach() for k, v in self.state.state_dict().items()}

    def unshard(self) -> None:
        """Give the sharded trainable parameters back as whole tensors (to save or reuse them)."""
        if not self.fsdp:
            return
        for mod in self.state.modules():
            for name, p in list(mod._parameters.items()):
                if p is not None and hasattr(p, "full_tensor"):
                    mod._parameters[name] = nn.Parameter(p.full_tensor().detach().clone(), p.requires_grad)

    # ------------------------------------------------------------------ collectives
    def _sum(self, x: float) -> float:
        if self.world == 1:
            return x
        t = torch.tensor([x], dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t)
        return float(t.item())

    def _any(self, flag: bool) -> bool:
        """True on every rank if true on any (a time limit stops every rank at the same step)."""
        return self._sum(float(flag)) > 0 if self.world > 1 else flag

    def _comm_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    def _clip(self) -> float:
        """Clip the global gradient norm; returns the norm before clipping (NaN where DeepSpeed clips)."""
        if self.deepspeed:
            norm = self.module.get_global_grad_norm() if hasattr(self.module, "get_global_grad_norm") else None
            return float(norm) if norm is not None else float("nan")
        clip = self.loop.grad_clip or float("inf")
        return float(whole(torch.nn.utils.clip_grad_norm_(self.params, clip)))

    def _save_accelerate(self, step: int) -> Path:
        root = self.loop.out / "checkpoints"
        final, tmp = root / f"{PREFIX}{step:08d}", root / f".tmp-{PREFIX}{step:08d}"
        if self.rank == 0 and tmp.exists():
            shutil.rmtree(tmp)
        dist.barrier()
        self.accelerator.save_state(str(tmp / "accelerate"))
        if self.rank == 0:
            (tmp / "state.json").write_text(json.dumps({"step": step, **self.loop.meta}))
            publish(tmp, final)
        dist.barrier()
        return final


def _shard(module: nn.Module, layers: list[nn.Module], trainable: list[nn.Parameter], world: int) -> None:
    """FSDP2: each of ``layers`` shards its frozen weights, then ``module`` shards the
    trainable parameters (the rest of the module's frozen weights stay whole)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    device = trainable[0].device.type if trainable else "cpu"
    mesh = init_device_mesh(device, (world,))
    mine = {id(p) for p in trainable}
    for layer in layers:
        fully_shard(layer, mesh=mesh, ignored_params={p for p in layer.parameters() if id(p) in mine})
    in_layers = {id(p) for layer in layers for p in layer.parameters()}
    frozen = {p for p in module.parameters() if id(p) not in mine and id(p) not in in_layers}
    fully_shard(module, mesh=mesh, ignored_params=frozen)


def local_numel(params: Iterable[torch.Tensor]) -> int:
    """Elements this rank holds: a sharded parameter counts only its local shard."""
    return sum((p.to_local() if hasattr(p, "to_local") else p).numel() for p in params)
