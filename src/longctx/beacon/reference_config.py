"""The ``beacon_*`` fields of reference Activation Beacon checkpoints, mapped to a BeaconConfig.

Three generations of code write these configs (docs/convert.md has the table of released
checkpoints): the first release (``beacon_stride`` a list, ``beacon_stride_mix``,
``beacon_attend_previous``, ``retrieval_*``), the current official code (adds
``beacon_parallel_window``, ``beacon_sink_size``, ``beacon_pos``, ...) and descendants built
on it (``enable_beacon``, ``beacon_accum``, ``beacon_cache``, ``beacon_avg*``, ...).
Fields that longctx implements map to the config; fields whose value means "off" (the
default) are accepted; a value that changes the algorithm is refused, naming the field;
unknown ``beacon_*`` fields draw a warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from longctx.beacon.config import BeaconConfig, BeaconConfigError


class ConversionError(ValueError):
    """A reference checkpoint longctx cannot represent, or a malformed one."""


SCHEMES = ("full-coverage", "step-expansion", "segmentation")
MAPPED = ("beacon_window", "beacon_stride", "beacon_attn", "beacon_ratio", "beacon_ratio_mix", "beacon_param",
          "beacon_embed_init", "beacon_sink_size", "beacon_attend_prev", "beacon_attend_previous", "beacon_pos")


def _off(*values: Any) -> Callable[[Any], bool]:
    return lambda v: any(v is x or (v == x and type(v) is type(x)) for x in values)


# field -> (accepted values, what another value would do that longctx does not)
NEUTRAL: dict[str, tuple[Callable[[Any], bool], str]] = {
    "beacon_parallel_window": (_off(None, 1), "runs several windows in one forward pass; longctx runs one window "
                                              "at a time (only 1 is supported)"),
    "enable_beacon": (_off(None, True), "switches the beacon off: this is a plain model, load it without converting"),
    "beacon_accum": (_off(None, True), "drops the beacons of earlier windows instead of accumulating them"),
    "beacon_cache": (_off(None), "keeps a bounded beacon KV cache with its own eviction rule"),
    "beacon_avg_init": (_off(None, False), "initialises each beacon from the average of its window's tokens"),
    "beacon_avg": (_off(None, False), "replaces beacon states by averages of the raw states"),
    "beacon_self_occurrence": (_off(None, False), "changes which tokens a beacon attends to"),
    "retrieval_method": (_off(None, "", "none"), "retrieves raw windows back into the context (not implemented)"),
    "retrieval_topk": (lambda v: True, ""),  # only read when retrieval_method is set
    "retrieval_key_length": (lambda v: True, ""),
    "beacon_stride_mix": (lambda v: True, ""),  # only matters with several strides (refused below)
}


def _int(cfg: dict[str, Any], key: str, default: int | None = None) -> int:
    v = cfg.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConversionError(f"config.json {key}={v!r}: expected an integer")
    return v


def _bool(cfg: dict[str, Any], key: str, default: bool) -> bool:
    v = cfg.get(key, default)
    if not isinstance(v, bool):
        raise ConversionError(f"config.json {key}={v!r}: expected true or false (a JSON boolean)")
    return v


def _str(cfg: dict[str, Any], key: str, default: str) -> str:
    v = cfg.get(key, default)
    if not isinstance(v, str):
        raise ConversionError(f"config.json {key}={v!r}: expected a string")
    return v


def config_from_reference(cfg: dict[str, Any]) -> BeaconConfig:
    """Map the reference ``beacon_*`` config fields to a :class:`BeaconConfig`."""
    if "beacon_window" not in cfg:
        raise ConversionError("config.json has no beacon_window: not a reference beacon checkpoint")
    for key, (ok, effect) in NEUTRAL.items():
        if key in cfg and not ok(cfg[key]):
            raise ConversionError(f"config.json {key}={cfg[key]!r} {effect}; longctx cannot convert it")
    window = _int(cfg, "beacon_window")
    stride = cfg.get("beacon_stride", window)
    if isinstance(stride, list):
        if len(set(stride)) != 1:
            raise ConversionError(f"config.json beacon_stride={stride}: several strides are not supported")
        stride = stride[0]
    if isinstance(stride, bool) or not isinstance(stride, int) or stride != window:
        raise ConversionError(f"config.json beacon_stride={stride!r} differs from beacon_window={window}; "
                              "longctx supports stride == window")
    attn = _str(cfg, "beacon_attn", "full-coverage")
    if attn not in SCHEMES:
        raise ConversionError(f"config.json beacon_attn={attn!r} is not supported (supported: {list(SCHEMES)})")
    ratios = cfg.get("beacon_ratio", [8])
    ratios = ratios if isinstance(ratios, list) else [ratios]
    if not ratios or any(isinstance(r, bool) or not isinstance(r, int) for r in ratios):
        raise ConversionError(f"config.json beacon_ratio={cfg.get('beacon_ratio')!r}: expected integers")
    params = cfg.get("beacon_param", ["q", "k", "v"])
    params = [params] if isinstance(params, str) else params
    if not isinstance(params, list) or not params:
        raise ConversionError(f"config.json beacon_param={cfg.get('beacon_param')!r}: longctx needs at least one of "
                              "q, k, v, o (beacons with the model's own projections are not supported)")
    prev_key = "beacon_attend_prev" if "beacon_attend_prev" in cfg else "beacon_attend_previous"
    unknown = sorted(k for k in cfg if k.startswith("beacon_") and k not in MAPPED and k not in NEUTRAL)
    if unknown:
        warnings.warn(f"reference config fields not known to longctx, ignored: {unknown}", stacklevel=2)
    try:
        return BeaconConfig(
            window=window, ratios=ratios, ratio_mix=_str(cfg, "beacon_ratio_mix", "step-random"),
            placement=_str(cfg, "beacon_pos", "interleave"), scheme=attn, projections=list(params),
            embed_init=_str(cfg, "beacon_embed_init", "eos"), sink=_int(cfg, "beacon_sink_size", 0),
            attend_prev=_bool(cfg, prev_key, True),
        )
    except BeaconConfigError as e:
        raise ConversionError(f"reference config cannot be represented: {e}") from e


def config_to_reference(config: BeaconConfig) -> dict[str, Any]:
    """The ``beacon_*`` fields the official code writes, for ``config``."""
    return {"beacon_window": config.window, "beacon_stride": config.window, "beacon_attn": config.scheme,
            "beacon_ratio": list(config.ratios), "beacon_ratio_mix": config.ratio_mix,
            "beacon_param": list(config.projections), "beacon_embed_init": config.embed_init,
            "beacon_sink_size": config.sink, "beacon_attend_prev": config.attend_prev, "beacon_pos": config.placement,
            "beacon_parallel_window": 1}
