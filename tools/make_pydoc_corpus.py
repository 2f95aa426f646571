"""Rebuild ``corpora/en_pydoc.txt.xz``: English prose from outside the Bible, for the BPE baseline's
out-of-domain tokenizer (``[model] tokenizer = { ..., trained_on = "embedded:en_pydoc" }``).

The text is the docstrings of CPython 3.11's standard library (``Lib/*.py`` and its packages, tests,
IDLE and demos left out), read with ``ast`` (nothing is imported), indentation removed (``inspect.cleandoc``), one
docstring per paragraph (blank line between), duplicates dropped, in path order; a document per
module. Python is released under the PSF License Agreement, which permits redistribution with the
notice kept (``corpora/README.md``).

    python tools/make_pydoc_corpus.py /usr/lib/python3.11 corpora/en_pydoc.txt.xz
"""

from __future__ import annotations

import ast
import inspect
import lzma
import sys
from pathlib import Path

SKIP = ("test", "tests", "idlelib", "turtledemo", "lib2to3", "site-packages", "dist-packages", "ensurepip")
MIN_CHARS = 40  # one-line stubs ("Return self.") say little about prose


def docstrings(source: str) -> list[str]:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))]
    found = []
    for node in nodes:
        text = ast.get_docstring(node, clean=True)
        if text and len(text) >= MIN_CHARS:
            found.append(inspect.cleandoc(text).strip())
    return found


def build(lib: Path) -> bytes:
    seen: set[str] = set()
    modules = []
    for path in sorted(lib.rglob("*.py")):
        parts = path.relative_to(lib).parts
        if any(p in SKIP or p.startswith("test") for p in parts):
            continue
        texts = []
        for text in docstrings(path.read_text(encoding="utf-8", errors="replace")):
            if text not in seen:
                seen.add(text)
                texts.append(text)
        if texts:
            name = ".".join(parts).removesuffix(".py")
            modules.append(f"Module {name}\n" + "\n\n".join(texts) + "\n")
    return "\n".join(modules).encode("utf-8")


def main() -> None:
    lib, out = Path(sys.argv[1]), Path(sys.argv[2])
    data = build(lib)
    out.write_bytes(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))
    print(f"{out}: {len(data):,} bytes of text, {out.stat().st_size:,} compressed")


if __name__ == "__main__":
    main()
