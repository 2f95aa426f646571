"""Read and write the TOML subset specs use (reading is ``tomllib``; writing is ours, since the
standard library has no writer and the spec shape is small: tables, arrays of tables, inline
tables for pluggable slots, scalars and lists of scalars)."""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Mapping
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

TOMLDecodeError = tomllib.TOMLDecodeError
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def loads(text: str) -> dict[str, Any]:
    return tomllib.loads(text)


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _string(key)


def _string(value: str) -> str:
    out = []
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        text = repr(value)
        return text if any(c in text for c in ".en") else text + ".0"
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_scalar(v)}" for k, v in value.items()) + " }" if value else "{}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _is_table_array(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(isinstance(v, Mapping) for v in value)


def dumps(data: Mapping[str, Any], *, inline: frozenset[str] = frozenset({"kind"})) -> str:
    """TOML for ``data``. A table that has a key in ``inline`` (a pluggable slot, which always has
    ``kind``) is written inline; other tables get headers; lists of tables become ``[[arrays]]``."""
    lines: list[str] = []
    _emit(data, [], lines, inline)
    return "\n".join(lines).strip() + "\n"


def _emit(table: Mapping[str, Any], prefix: list[str], lines: list[str], inline: frozenset[str]) -> None:
    def is_subtable(v: Any) -> bool:
        return isinstance(v, Mapping) and not (inline & set(v))

    for key, value in table.items():
        if value is None or is_subtable(value) or _is_table_array(value):
            continue
        lines.append(f"{_key(key)} = {_scalar(value)}")
    for key, value in table.items():
        path = [*prefix, _key(key)]
        if is_subtable(value) and not value:
            continue  # an empty table says nothing
        if is_subtable(value):
            lines.append("")
            lines.append(f"[{'.'.join(path)}]")
            _emit(value, path, lines, inline)
        elif _is_table_array(value):
            for item in value:
                lines.append("")
                lines.append(f"[[{'.'.join(path)}]]")
                _emit(item, path, lines, inline)
