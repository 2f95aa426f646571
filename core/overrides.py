"""``--set key=value`` overrides of a spec: applied to a spec, or to a spec file's TOML before it
is read, every problem reported at its source (the file, or the ``--set`` behind it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from aunet.core import toml
from aunet.core.convert import S, _parse_toml, _read_spec_text, converter, load_spec, spec_file, spec_to_dict
from aunet.core.errors import SpecError, SpecIssue
from aunet.core.registry import Registry
from aunet.core.spec import Spec


def apply_overrides(spec: Spec, overrides: Sequence[str], *, registry: Registry | None = None) -> Spec:
    """``--set key=value``: dotted paths into the spec (``train.lr=1e-3``,
    ``levels[1].stage.layers=6``); values are TOML (strings may be bare). Problems name the
    ``--set`` that caused them."""
    return _structure_with_overrides(
        spec_to_dict(spec, registry=registry),
        overrides,
        source="--set",
        registry=registry,
        name=spec.name,
        cls=type(spec),
    )


def override_sources(overrides: Sequence[str]) -> dict[str, str]:
    """``{path: "--set path=value"}`` for attributing a spec's problems to the override behind them."""
    out = {}
    for item in overrides:
        key, sep, _ = item.partition("=")
        if sep and key.strip():
            out[key.strip()] = f"--set {item.strip()}"
    return out


def attribute(issues: Sequence[SpecIssue], sources: Mapping[str, str]) -> list[SpecIssue]:
    """The issues, each whose path is under (or above) an overridden key named at that ``--set``."""
    out = []
    for issue in issues:
        for key, source in sources.items():
            if _related(issue.path, key):
                issue = attrs.evolve(issue, source=source)
                break
        out.append(issue)
    return out


def _related(path: str, key: str) -> bool:
    def under(a: str, b: str) -> bool:
        return a == b or a.startswith((b + ".", b + "["))

    return under(path, key) or under(key, path)


def _structure_with_overrides(
    data: dict[str, Any],
    overrides: Sequence[str],
    *,
    source: str,
    registry: Registry | None,
    name: str,
    cls: type[S] = Spec,
) -> S:
    issues = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            issues.append(SpecIssue("", f"'{item}' is not key=value (e.g. train.lr=1e-3)", source="--set"))
            continue
        try:
            value = toml.loads(f"v = {raw}")["v"]
        except (toml.TOMLDecodeError, ValueError, RecursionError):
            value = raw  # a bare string
        problem = _assign(data, key, value)
        if problem:
            issues.append(SpecIssue(key, problem, source=f"--set {item.strip()}"))
    sources = override_sources(overrides)
    try:
        spec = converter(registry).structure(data, cls)
    except SpecError as exc:
        issues.extend(attribute(exc.issues, sources))
    if issues:
        raise SpecError(issues, source=source)
    return spec if spec.name or not name else attrs.evolve(spec, name=name)


def load_spec_with_overrides(
    path: str | Path, overrides: Sequence[str], *, registry: Registry | None = None, cls: type[S] = Spec
) -> S:
    """``load_spec`` with ``--set`` overrides applied to the file's TOML before it is read, so that
    every problem of both is reported at once, each at its source (the file, or the ``--set``)."""
    if not overrides:
        return load_spec(path, registry=registry, cls=cls)
    path = spec_file(path)
    text = _read_spec_text(path)
    data = _parse_toml(text, source=str(path))
    return _structure_with_overrides(data, overrides, source=str(path), registry=registry, name=path.stem, cls=cls)


def _assign(data: dict[str, Any], key: str, value: Any) -> str | None:
    parts = re.findall(r"[^.\[\]]+|\[\d+\]", key)
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part.startswith("["):
            index = int(part[1:-1])
            if not isinstance(node, list) or index >= len(node):
                return f"index {index} is out of range ({len(node) if isinstance(node, list) else 0} entries)"
            if last:
                node[index] = value
            else:
                node = node[index]
        else:
            if not isinstance(node, dict):
                return f"'{part}' does not name a table"
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
    return None
