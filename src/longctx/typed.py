"""Type checks for config dataclasses: a value of the wrong type is an error naming the field,
never silently coerced (``"no"`` is not ``True``, ``2.7`` is not ``2``, ``"48"`` is not ``[4, 8]``)."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin in (list, tuple):
        (item, *_) = typing.get_args(hint) or (Any,)
        return isinstance(value, (list, tuple)) and all(_matches(v, item) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def check_types(obj: Any, where: str | None = None) -> None:
    """Raise ValueError if a field of dataclass ``obj`` does not have its annotated type."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if not _matches(value, hints[f.name]):
            hint = str(hints[f.name]).replace("typing.", "")
            tip = ""
            if isinstance(value, str):
                try:
                    float(value)
                    tip = " (YAML reads a number like 2e-4 as text: write 2.0e-4)"
                except ValueError:
                    pass
            raise ValueError(f"{where or type(obj).__name__}: {f.name}={value!r} is not of type {hint}{tip}")


def from_yaml(cls: type, path: str | Path, overrides: dict[str, Any]):
    """A config dataclass from a YAML recipe; overrides that are not None win. Unknown keys,
    wrong types and unreadable files are errors naming the file and the key."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise ValueError(f"cannot read recipe {path}: {e}") from e
    except yaml.YAMLError as e:
        raise ValueError(f"recipe {path} is not valid YAML: {e}") from e
    data = data or {}
    if not isinstance(data, dict):
        raise ValueError(f"recipe {path} must be a mapping of settings, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"recipe {path}: unknown settings {unknown} (known: {sorted(known)})")
    data.update({k: v for k, v in overrides.items() if v is not None})
    obj = cls(**data)
    check_types(obj, f"recipe {path}")
    return obj
