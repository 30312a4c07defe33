"""BeaconConfig: the validated settings of an Activation Beacon adapter (Zhang et al., Activation Beacon, 2024; docs/beacon.md)."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields
from typing import Any

from longctx.typed import opt

PLACEMENTS = ("interleave", "append")
SCHEMES = ("full-coverage", "step-expansion", "segmentation")
MIXES = ("fixed", "step-random", "instance-random", "sequence")
PROJECTIONS = ("q", "k", "v", "o")
EMBED_INITS = ("eos", "bos")
_ADAPT = re.compile(r"^adapt-(\d+)$")
READ_RATIOS = [2, 4, 8, 16, 32, 64, 128]  # reading a long input with adapt-K (generate, compress)
TRAIN_RATIOS = [2, 4, 8, 16, 32]  # drawn per window in training, and adapt-K in evaluation
READ_MIX = "adapt-1024"


def _not_int(v: Any) -> bool:
    return isinstance(v, bool) or not isinstance(v, int)


class BeaconConfigError(ValueError):
    """A bad beacon setting; the message names the field."""


@dataclass
class BeaconConfig:
    """Settings of a beacon adapter (each field's help below; docs/beacon.md, "Settings")."""

    window: int = opt(1024, help="raw tokens per window (beacon_window); the stride equals it")
    ratios: list[int] = opt(factory=lambda: [8], help="candidate compression ratios; 0 keeps a window uncompressed")
    ratio_mix: str = opt("fixed", help="fixed (first ratio), step-random (per window), instance-random (per sequence), "
                                       "sequence (cycle), adapt-K (per sequence: smallest ratio whose compressed "
                                       "length fits the model's positions with K to spare)")
    placement: str = opt("interleave", help="interleave (a beacon after every a raw tokens) or append "
                                            "(window/a beacons after each full window)")
    scheme: str = opt("full-coverage", help="what beacons attend to: full-coverage, step-expansion or segmentation")
    projections: list[str] = opt(factory=lambda: ["q", "k", "v", "o"], help="which of q, k, v, o get beacon copies")
    embed_init: str = opt("eos", help="token whose embedding initialises the beacon embedding (eos or bos)")
    sink: int = opt(0, help="first tokens of the input kept ahead of the memory")
    attend_prev: bool = opt(True, help="step-expansion/segmentation: a beacon sees earlier beacons of its window "
                                       "(in append mode this also sets its position)")
    seed: int = opt(0, help="seed of random ratio draws")

    def __post_init__(self) -> None:
        def bad(name: str, msg: str) -> BeaconConfigError:
            return BeaconConfigError(f"BeaconConfig.{name}: {msg}")

        if not isinstance(self.ratios, (list, tuple)) or any(_not_int(r) for r in self.ratios):
            raise bad("ratios", f"must be a list of integers, got {self.ratios!r}")
        if not isinstance(self.projections, (list, tuple)) or any(not isinstance(p, str) for p in self.projections):
            raise bad("projections", f"must be a list of names, got {self.projections!r}")
        self.ratios = list(self.ratios)
        self.projections = list(self.projections)
        for name in ("window", "sink", "seed"):
            if _not_int(getattr(self, name)):
                raise bad(name, f"must be an integer, got {getattr(self, name)!r}")
        for name in ("ratio_mix", "placement", "scheme", "embed_init"):
            if not isinstance(getattr(self, name), str):
                raise bad(name, f"must be a string, got {getattr(self, name)!r}")
        if not isinstance(self.attend_prev, bool):
            raise bad("attend_prev", f"must be true or false, got {self.attend_prev!r}")
        self.validate()

    def validate(self) -> None:
        def bad(name: str, msg: str) -> BeaconConfigError:
            return BeaconConfigError(f"BeaconConfig.{name}: {msg}")

        if not isinstance(self.window, int) or self.window < 1:
            raise bad("window", f"must be a positive integer, got {self.window!r}")
        if not self.ratios:
            raise bad("ratios", "needs at least one ratio")
        for r in self.ratios:
            if r < 0:
                raise bad("ratios", f"ratio {r} is negative")
            if r > 0 and self.window % r:
                raise bad("ratios", f"ratio {r} does not divide window {self.window}")
        if self.ratio_mix not in MIXES and not _ADAPT.match(self.ratio_mix):
            raise bad("ratio_mix", f"{self.ratio_mix!r} is not one of {MIXES} or 'adapt-K'")
        if self.placement not in PLACEMENTS:
            raise bad("placement", f"{self.placement!r} is not one of {PLACEMENTS}")
        if self.scheme not in SCHEMES:
            raise bad("scheme", f"{self.scheme!r} is not one of {SCHEMES}")
        unknown = [p for p in self.projections if p not in PROJECTIONS]
        if unknown or not self.projections or len(set(self.projections)) != len(self.projections):
            raise bad("projections", f"{self.projections!r} must be a non-empty subset of {PROJECTIONS}")
        if self.embed_init not in EMBED_INITS:
            raise bad("embed_init", f"{self.embed_init!r} is not one of {EMBED_INITS}")
        if not 0 <= self.sink < self.window:
            raise bad("sink", f"must be in [0, window), got {self.sink}")

    @property
    def adapt_margin(self) -> int | None:
        """K of an ``adapt-K`` mix, else None."""
        m = _ADAPT.match(self.ratio_mix)
        return int(m.group(1)) if m else None

    @property
    def needs_mask(self) -> bool:
        """Whether attention needs an explicit mask beyond causal (docs/beacon.md, "Settings")."""
        return self.scheme != "full-coverage"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BeaconConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise BeaconConfigError(f"BeaconConfig: unknown fields {unknown}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def replace(self, **changes: Any) -> BeaconConfig:
        """A copy with the changes that are not None."""
        data = self.to_dict()
        data.update({k: v for k, v in changes.items() if v is not None})
        return BeaconConfig.from_dict(data)

    def override(self, **changes: Any) -> BeaconConfig:
        """Inference overrides (the CLI's --window/--ratios/--ratio-mix/--sink, eval's ratio): as
        :meth:`replace`, and a single ratio given without a mix reads at that fixed ratio."""
        cfg = self.replace(**changes)
        ratios = changes.get("ratios")
        if ratios is not None and changes.get("ratio_mix") is None and len(ratios) == 1:
            cfg = cfg.replace(ratio_mix="fixed")
        return cfg


STRUCTURE = ("projections", "placement", "scheme", "attend_prev", "embed_init")  # fixed once an adapter is trained


def training_beacon() -> BeaconConfig:
    """The beacon settings a training run uses unless its recipe says otherwise."""
    return BeaconConfig(window=512, ratios=list(TRAIN_RATIOS), ratio_mix="step-random")


def continue_training(run: BeaconConfig, adapter: BeaconConfig) -> BeaconConfig:
    """The settings for training further an adapter made with ``adapter``: its structure (projections,
    placement, scheme, attend_prev, embed_init) is kept, the run's window, ratios, mix and sink apply.
    A run that sets a structural field other than the default and other than the adapter's is refused."""
    default = training_beacon()
    kept = {}
    for name in STRUCTURE:
        mine, theirs = getattr(run, name), getattr(adapter, name)
        if mine != theirs and mine != getattr(default, name):
            raise BeaconConfigError(f"BeaconConfig.{name}: the run sets {mine!r} but the adapter it continues was "
                                    f"made with {theirs!r}; an adapter's {name} cannot change")
        kept[name] = theirs
    return run.replace(**kept)
