"""Where longctx keeps its caches (converted models, default texts)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$LONGCTX_CACHE``, else ``~/.cache/longctx``."""
    return Path(os.environ.get("LONGCTX_CACHE") or Path.home() / ".cache" / "longctx")
