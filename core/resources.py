"""Files shipped inside the package: the embedded corpora and the specs.

The repository root is the ``aunet`` package, so these resolve the same way from a checkout, an
editable install and a wheel.
"""

from __future__ import annotations

import functools
import lzma
from pathlib import Path

from aunet.core.errors import InputError

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
CORPORA = PACKAGE_ROOT / "corpora"
SPECS = PACKAGE_ROOT / "specs"


def corpus_path(name: str) -> Path:
    """Path of an embedded corpus (``en_web`` is the World English Bible)."""
    path = CORPORA / f"{name}.txt.xz"
    if not path.is_file():
        known = sorted(p.name.removesuffix(".txt.xz") for p in CORPORA.glob("*.txt.xz"))
        raise InputError(f"no embedded corpus '{name}'; embedded: {', '.join(known) or '(none)'}")
    return path


@functools.cache
def read_corpus(name: str) -> bytes:
    """The decompressed bytes of an embedded corpus (cached: the English corpus is 4.9 MB)."""
    with lzma.open(corpus_path(name)) as f:
        return f.read()


@functools.cache
def shipped_spec_names() -> tuple[str, ...]:
    """Names of the shipped specs (``aunet2-tiny``, ``paper/aunet2-1b``...)."""
    return tuple(sorted(p.relative_to(SPECS).as_posix().removesuffix(".toml") for p in SPECS.rglob("*.toml")))


def spec_path(name: str) -> Path:
    """Path of a shipped spec, by file name with or without ``.toml`` (``aunet2-tiny``,
    ``paper/aunet2-1b``)."""
    path = SPECS / (name if name.endswith(".toml") else f"{name}.toml")
    if not path.is_file():
        raise InputError(f"no shipped spec '{name}'; shipped: {', '.join(shipped_spec_names()) or '(none)'}")
    return path
