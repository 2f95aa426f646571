"""``aunet compare --grid``: a small search over recipe and model keys, the same for every spec.

``--grid KEY=V,V,...`` (repeatable) trains every spec once per combination of the grids' values
(their product), each variant named ``<spec>.<last key part>-<value>...`` (characters a folder
name cannot hold become ``_``); ``--grid SPEC:KEY=V,...`` applies to the spec of that name only (a
BPE vocabulary size means nothing to a byte model). The comparison reports, per spec, the variant with the lowest validation bits per
byte, and writes that spec, with the chosen values set and its own name kept, to
``OUT/tuned/<spec>.toml``: what a sweep then trains. Run it on the ``tuning`` split
(``--split tuning``) so that the final validation bytes are never used to choose.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from aunet.core.errors import InputError

TUNED = "tuned"


@attrs.frozen
class Axis:
    """One ``--grid``: a dotted key, its values as given, and the spec it is limited to (None: all)."""

    key: str
    values: tuple[str, ...]
    only: str | None = None

    @classmethod
    def parse(cls, text: str) -> Axis:
        head, eq, values = text.partition("=")
        only, colon, key = head.rpartition(":") if ":" in head else (None, "", head)
        parts = tuple(v.strip() for v in _top_level_split(values) if v.strip())
        if not eq or not key.strip() or not parts or (colon and not only):
            raise InputError(f"--grid {text!r}: give KEY=V,V,... or SPEC:KEY=V,V,..., e.g. train.lr=2e-3,4.5e-3,1e-2")
        if len(set(parts)) != len(parts):
            raise InputError(f"--grid {text!r}: a value is repeated")
        return cls(key.strip(), parts, only.strip() if only else None)

    def applies(self, name: str) -> bool:
        return self.only is None or self.only == name


def _top_level_split(text: str) -> list[str]:
    """``text`` cut at the commas outside brackets (a value may be a list: ``[1,0.5]``)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return [*parts, text[start:]]


@attrs.frozen
class Variant:
    """One spec of the search: its base spec's name, the overrides that make it, its run name."""

    base: str
    overrides: tuple[str, ...]
    name: str


def variants(names: Sequence[str], axes: Sequence[Axis]) -> list[Variant]:
    """Every spec's variants, in order (the product of the axes that apply to it)."""
    unknown = sorted({a.only for a in axes if a.only is not None} - set(names))
    if unknown:
        raise InputError(f"--grid names {', '.join(unknown)}, which is not among the specs ({', '.join(names)})")
    out = []
    for name in names:
        mine = [a for a in axes if a.applies(name)]
        for values in itertools.product(*(a.values for a in mine)):
            overrides = tuple(f"{a.key}={v}" for a, v in zip(mine, values))
            label = "".join(
                f".{a.key.rsplit('.', 1)[-1]}-{re.sub(r'[^A-Za-z0-9._-]', '_', v)}" for a, v in zip(mine, values)
            )
            out.append(Variant(name, overrides, name + label))
    return out


def best(rows: Sequence[dict[str, Any]], chosen: Sequence[Variant]) -> dict[str, dict[str, Any]]:
    """Per base spec: its variants' (overrides, val bpb) and the best one (lowest finite bpb)."""
    by_run = {row["spec"]: row for row in rows}
    result: dict[str, dict[str, Any]] = {}
    for v in chosen:
        entry = result.setdefault(v.base, {"tried": [], "best": None})
        bpb = by_run[v.name]["val_bpb"]
        entry["tried"].append({"run": v.name, "overrides": list(v.overrides), "val_bpb": bpb})
        if math.isfinite(bpb) and (entry["best"] is None or bpb < entry["best"]["val_bpb"]):
            entry["best"] = entry["tried"][-1]
    return result


def write_tuned(
    out: Path, sources: dict[str, str], choices: dict[str, dict[str, Any]], overrides: Sequence[str] = ()
) -> list[Path]:
    """``OUT/tuned/<spec>.toml`` per spec: its source spec with ``overrides`` (every spec's
    ``--set``) and the best values set, its name kept."""
    import json

    from aunet.core.convert import dump_spec
    from aunet.jobs.config import load_spec_with_overrides
    from aunet.jobs.runtime.files import write_text

    written = []
    (out / TUNED).mkdir(parents=True, exist_ok=True)
    write_text(out / TUNED / "choices.json", json.dumps({"overrides": list(overrides), "specs": choices}, indent=1))
    for base, entry in choices.items():
        if entry["best"] is None:
            continue
        spec = load_spec_with_overrides(sources[base], [*overrides, *entry["best"]["overrides"]])
        path = out / TUNED / f"{base}.toml"
        chosen = ", ".join([*overrides, *entry["best"]["overrides"]]) or "the spec's own values"
        write_text(path, f"# {base} tuned by aunet compare --grid: {chosen}\n" + dump_spec(spec))
        written.append(path)
    return written


def markdown(choices: dict[str, dict[str, Any]]) -> str:
    lines = ["", "| spec | tried (val bpb) | chosen |", "|---|---|---|"]
    for base, entry in choices.items():
        tried = "; ".join(f"{', '.join(t['overrides']) or 'as given'}: {t['val_bpb']:.4f}" for t in entry["tried"])
        chosen = ", ".join(entry["best"]["overrides"]) if entry["best"] else "none finite"
        lines.append(f"| {base} | {tried} | {chosen} |")
    return "\n".join(lines) + "\n"
