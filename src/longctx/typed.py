"""Config dataclasses: type checks, YAML recipes, and command-line options built from the fields.

A value of the wrong type is an error naming the field, never silently coerced (``"no"`` is not
``True``, ``2.7`` is not ``2``, ``"48"`` is not ``[4, 8]``). Each field's help lives beside it
(:func:`opt`), so defaults and help are written once and the CLI is made from them.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Iterable
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


def check_positive(obj: Any, names: Iterable[str]) -> None:
    """Raise ValueError if one of the named fields of ``obj`` is set (not None) and not above 0."""
    for name in names:
        v = getattr(obj, name)
        if v is not None and v <= 0:
            raise ValueError(f"{type(obj).__name__}: {name} must be positive, got {v}")


def opt(default: Any = dataclasses.MISSING, *, factory: Callable[[], Any] | None = None, help: str = "") -> Any:
    """A dataclass field with its help text (read by :func:`add_options` and the docs)."""
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from ``path``; unreadable files, bad YAML and non-mappings are named errors."""
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
    return data


def nested_fields(cls: type) -> dict[str, type]:
    """Fields of ``cls`` that are themselves config dataclasses (e.g. ``TrainConfig.beacon``)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if dataclasses.is_dataclass(hints[f.name])}


def build(cls: type, data: dict[str, Any], where: str):
    """``cls`` from a mapping; nested config sections are mappings of their own fields. Unknown
    keys and wrong types are errors naming ``where`` and the key."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}: unknown settings {unknown} (known: {sorted(known)})")
    data = dict(data)
    for name, sub in nested_fields(cls).items():
        if name in data and not dataclasses.is_dataclass(data[name]):
            if not isinstance(data[name], dict):
                raise ValueError(f"{where}: {name} must be a mapping of {sub.__name__} settings, got {data[name]!r}")
            base = {f.name: getattr(_default(cls, name), f.name) for f in dataclasses.fields(sub)}
            data[name] = build(sub, {**base, **data[name]}, f"{where}, {name}")
    try:
        obj = cls(**data)
    except ValueError as e:
        raise type(e)(f"{where}: {e}") from e
    check_types(obj, where)
    return obj


def _default(cls: type, name: str) -> Any:
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def merge(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``data`` with the overrides that are not None; nested mappings merge key by key."""
    out = dict(data)
    for k, v in overrides.items():
        if v is None:
            continue
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def from_yaml(cls: type, path: str | Path, overrides: dict[str, Any]):
    """A config dataclass from a YAML recipe; overrides that are not None win. Unknown keys,
    wrong types and unreadable files are errors naming the file and the key."""
    return build(cls, merge(read_yaml(path), overrides), f"recipe {path}")


# ----------------------------------------------------------------------------- command line
def _arg_type(hint: Any) -> tuple[Any, dict[str, Any]]:
    """argparse settings for a field's type: (type, extra kwargs)."""
    args = [h for h in typing.get_args(hint) if h is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        hint = args[0]
    if typing.get_origin(hint) in (list, tuple):
        (item, *_) = typing.get_args(hint) or (str,)
        return item, {"nargs": "+"}
    if hint is bool:
        return None, {"action": argparse.BooleanOptionalAction}
    return hint if hint in (int, float) else str, {}


def _shown(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    return str(value)


def add_options(group: Any, cls: type, *, skip: Iterable[str] = (), section: str | None = None,
                defaults: Any = None, taken: set[str] | None = None, alt: type | None = None,
                alt_label: str = "") -> list[str]:
    """Add ``--field-name`` options for the fields of ``cls`` (help and default from the field).

    Every option defaults to None, so a recipe's or the dataclass's own value applies unless
    given. ``section`` names a nested config: its options are stored as ``SECTION.field``.
    ``defaults`` (an instance) supplies the defaults shown; ``taken`` holds option names
    already added (skipped and extended here); ``alt``, a second config class whose same-named
    fields share the option, has its differing default shown too. Returns the destinations added.
    """
    hints = typing.get_type_hints(cls)
    taken = set() if taken is None else taken
    others = {f.name for f in dataclasses.fields(alt)} if alt is not None else set()
    dests = []
    for f in dataclasses.fields(cls):
        if f.name in skip or f.name in taken or f.name in nested_fields(cls):
            continue
        flag = "--" + f.name.replace("_", "-")
        kind, extra = _arg_type(hints[f.name])
        value = getattr(defaults, f.name) if defaults is not None else _default(cls, f.name)
        text = f.metadata.get("help", "")
        shown = f" (default: {_shown(value)})" if value is not None and value != [] else ""
        if f.name in others and _default(alt, f.name) != value:
            shown = f" (default: {_shown(value)}; {alt_label or alt.__name__}: {_shown(_default(alt, f.name))})"
        dest = f"{section}.{f.name}" if section else f.name
        kw = {"type": kind, "metavar": f.name.upper()} if kind is not None else {}
        group.add_argument(flag, dest=dest, default=None, help=f"{text}{shown}", **kw, **extra)
        taken.add(f.name)
        dests.append(dest)
    return dests


def options_of(args: argparse.Namespace, dests: Iterable[str]) -> dict[str, Any]:
    """The given options as a (nested, for ``SECTION.field``) mapping; unset ones left out."""
    out: dict[str, Any] = {}
    for dest in dests:
        value = getattr(args, dest, None)
        if value is None:
            continue
        section, dot, name = dest.partition(".")
        if dot:
            out.setdefault(section, {})[name] = value
        else:
            out[dest] = value
    return out
