"""Context extension by fine-tuning at the original length (CREAM, PoSE, RandPos, full; docs/cream.md).

The model's RoPE is scaled to the target length (linear by default) and it is fine-tuned on
N-token samples whose position ids span the target length, either fully or with LoRA through
``peft`` (``lora`` > 0). The result is saved with ``save_pretrained`` (LoRA merged into the
weights) and reloads as a stock transformers model (no custom code). ``steps=0`` saves the
model with only its RoPE scaled: the no-fine-tuning baseline.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from longctx import compat
from longctx.positions import PositionCollator, scale_rope
from longctx.train.checkpoint import TrainableParams
from longctx.train.data import read_records
from longctx.train.engine import Engine, Loop, StepResult
from longctx.typed import check_positive, check_types, from_yaml, opt


@dataclass
class ExtendConfig:
    """A context-extension run (recipes/smollm2-135m-cream.yaml holds these keys)."""

    method: str = opt("cream", help="cream | pose | randpos | full")
    model: str = opt("smollm2-135m", help="base model: hub id, local directory or the embedded default")
    data: list[str] = opt(factory=lambda: ["moby-dick", "sotu"], help="training texts (as for beacon training)")
    out: str = opt("runs/cream", help="output folder (checkpoints, log.jsonl, model/); a rerun resumes it")
    target_length: int = opt(32768, help="target length L the position ids span")
    train_length: int | None = opt(None, help="tokens per training sample (default: the model's own positions)")
    rope: str = opt("linear", help="RoPE scaling: linear | ntk | yarn")
    steps: int = opt(100, help="optimizer steps in total (0: save the model with only its RoPE scaled)")
    lr: float = opt(2e-5, help="peak learning rate")
    warmup: int = opt(10, help="warm-up steps")
    batch_size: int = opt(1, help="samples per step")
    seed: int = opt(0, help="seed of data order and position draws")
    dtype: str = opt("bf16", help="model dtype")
    save_every: int = opt(50, help="checkpoint every N steps")
    stop_after: int | None = opt(None, help="end this run after N steps (resume later)")
    time_limit: float | None = opt(None, help="minutes: checkpoint, save the model and stop once exceeded")
    save_minutes: float | None = opt(None, help="also checkpoint whenever this many minutes passed since the last one")
    sigma: float = opt(3.0, help="CREAM: spread of the truncated Gaussian middle sampling")
    holdout: list[str] = opt(factory=list, help="sources never trained on (substring match)")
    lora: int = opt(0, help="LoRA rank through peft; 0 = full fine-tuning")
    lora_alpha: int = opt(32, help="LoRA alpha")
    lora_targets: list[str] = opt(factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"], help="LoRA target modules")
    checkpointing: bool = opt(False, help="non-reentrant gradient checkpointing (transformers' own)")

    def __post_init__(self) -> None:
        check_types(self)
        if self.steps < 0:
            raise ValueError(f"ExtendConfig: steps must be 0 (RoPE scaling only) or more, got {self.steps}")
        for name in ("batch_size", "save_every", "target_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"ExtendConfig: {name} must be at least 1, got {getattr(self, name)}")
        check_positive(self, ("time_limit", "save_minutes"))
        if self.method not in ("cream", "pose", "randpos", "full"):
            raise ValueError(f"ExtendConfig: method {self.method!r} is not one of cream, pose, randpos, full")
        if self.rope not in ("linear", "ntk", "yarn"):
            raise ValueError(f"ExtendConfig: rope {self.rope!r} is not one of linear, ntk, yarn")

    @classmethod
    def from_yaml(cls, path: str, **overrides: Any) -> ExtendConfig:
        return from_yaml(cls, path, overrides)


def add_lora(model, rank: int, alpha: int, targets: list[str]):
    """Wrap ``model`` with LoRA adapters (``peft``) on ``targets``; only those train."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as e:  # pragma: no cover
        raise ImportError("LoRA fine-tuning needs peft: pip install 'peft>=0.17'") from e
    return get_peft_model(model, LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0,
                                            task_type="CAUSAL_LM"))


def training_documents(cfg: ExtendConfig, tokenizer, N: int) -> list[list[int]]:
    """Token ids (EOS appended) of the training documents, cut into pieces of at most the target
    length and at least ``N`` tokens, in a seeded shuffled order (the same for every method)."""
    eos = tokenizer.eos_token_id
    docs = []
    for rec in read_records(cfg.data):
        if "text" not in rec or any(h in rec.get("source", "") for h in cfg.holdout):
            continue
        ids = tokenizer(rec["text"], add_special_tokens=False).input_ids + [eos]
        docs.extend(p for p in (ids[i : i + cfg.target_length] for i in range(0, len(ids), cfg.target_length))
                    if len(p) >= N)
    if not docs:
        raise ValueError(f"no document of at least {N} tokens in {cfg.data}")
    random.Random(cfg.seed).shuffle(docs)
    return docs


def extend(cfg: ExtendConfig, model=None, tokenizer=None) -> Path:
    """Fine-tune ``cfg.model`` for ``cfg.target_length`` positions; resumes from ``cfg.out``."""
    from longctx.models import load_model

    out = Path(cfg.out)
    engine = Engine(Loop(out=out, steps=cfg.steps, lr=cfg.lr, warmup=cfg.warmup, schedule="constant",
                         save_every=cfg.save_every, stop_after=cfg.stop_after, time_limit=cfg.time_limit,
                         save_minutes=cfg.save_minutes, bf16=cfg.dtype == "bf16",
                         desc=f"extend ({cfg.method})", meta={"seed": cfg.seed, "method": cfg.method}))
    if engine.fsdp:
        raise ValueError("context extension trains with DDP (or DeepSpeed) across ranks, not FSDP: launch it "
                         "with recipes/accelerate/ddp-8gpu.yaml or zero2-8gpu.yaml")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    owned = model is None
    if owned:  # full fine-tuning keeps fp32 master weights (bf16 autocast); LoRA trains fp32 adapters
        model, tokenizer = load_model(cfg.model, dtype=cfg.dtype if cfg.lora else "fp32")
    N = cfg.train_length or compat.max_positions(model)
    scale_rope(compat.text_config(model), cfg.target_length, cfg.rope)
    compat.refresh_rotary(model)
    collate = PositionCollator(cfg.method, N, cfg.target_length, seed=cfg.seed, sigma=cfg.sigma)
    docs = training_documents(cfg, tokenizer, N)
    if cfg.lora:
        model = add_lora(model, cfg.lora, cfg.lora_alpha, cfg.lora_targets)
    if cfg.checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    trainable = TrainableParams(model)
    n_train = sum(p.numel() for p in trainable.parameters())
    n_all = sum(p.numel() for p in model.parameters())
    if engine.rank == 0:
        print(f"extend ({cfg.method}, {cfg.rope} x{cfg.target_length // N}): training {n_train:,} of {n_all:,} "
              f"parameters ({f'LoRA r={cfg.lora}' if cfg.lora else 'full'}), {len(docs)} documents of >= {N} tokens; "
              f"{engine.strategy} over {engine.world} process(es)")
    engine.setup(model, trainable, run_file=out / "extend_config.json", settings=asdict(cfg),
                 may_change={"steps", "stop_after", "save_every", "checkpointing", "time_limit", "save_minutes"})
    device = compat.embed_tokens(model).weight.device

    def step(i: int, module) -> StepResult:
        first = (i * engine.world + engine.rank) * cfg.batch_size  # each rank its own documents and draws
        picks = [docs[(first + j) % len(docs)] for j in range(cfg.batch_size)]
        batch = {k: v.to(device) for k, v in collate(picks, first).items()}
        loss = module(**batch).loss
        return StepResult(loss, int((batch["labels"][:, 1:] != -100).sum()),
                          row={"positions_max": int(batch["position_ids"].max())})

    finished = engine.run(step)
    rank = engine.rank
    model.eval()
    if finished:
        if cfg.lora:
            if rank == 0:
                model.save_pretrained(out / "lora")  # the LoRA weights alone (safetensors)
            model = model.merge_and_unload()  # every rank: the caller's model ends merged
        if cfg.checkpointing:
            model.gradient_checkpointing_disable()
        if rank == 0:
            if owned and not cfg.lora and cfg.dtype == "bf16":
                model = model.to(torch.bfloat16)  # saved in the dtype asked for
            model.save_pretrained(out / "model")
            tokenizer.save_pretrained(out / "model")
    return out

