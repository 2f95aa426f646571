"""Declarative specs: one TOML file describes a whole hierarchy (AUNET.md section 1).

A spec has one ``[[levels]]`` table per level of the hierarchy, level 0 (bytes) first; level i's
table holds everything that runs at level i: its width, its stage, and, from level 1 up, the
splitter that decides its boundaries and the pooler and upsampler that connect it to the level
below. Every pluggable slot is an inline table with a ``kind``::

    name = "aunet2-tiny"

    [[levels]]                      # level 0: bytes
    dim = 256
    stage = { kind = "transformer", layers = 2, head_dim = 64, window = 512 }

    [[levels]]                      # level 1: words
    dim = 512
    splitter = { kind = "whitespace" }
    stage = { kind = "transformer", layers = 6 }

Reading is strict: unknown keys, wrong types and unknown kinds are errors, all of them reported at
once, each with its path (``levels[1].splitter.kind: unknown splitter 'whitespce'; known: ...``).
The converter is built from a registry after plugins load, so third-party kinds work everywhere a
built-in does.
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import attrs
import cattrs
from cattrs.errors import AttributeValidationNote, ClassValidationError, IterableValidationError, IterableValidationNote

from aunet.core import toml
from aunet.core.components import ComponentSpec, PoolerSpec, StageSpec, UpsamplerSpec
from aunet.core.errors import InputError, SpecError, SpecIssue, did_you_mean, known_list
from aunet.core.levels import SplitterStack
from aunet.core.registry import Family, Registry, default_registry
from aunet.core.splitter import Splitter


def _positive(instance: object, attribute: attrs.Attribute, value: Any) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"must be > 0, got {value}")


@attrs.frozen(kw_only=True)
class LevelSpec:
    """One level of the hierarchy: level 0 is bytes, the last level is the trunk."""

    dim: int | None = attrs.field(default=None, validator=_positive)
    """Width of the level's vectors; poolers and upsamplers take theirs from here."""
    splitter: Splitter | None = None
    """Which bytes end a segment of this level (levels >= 1 only)."""
    stage: StageSpec | None = None
    """The transformer stack run at this level (encoder and decoder alike; the trunk at the top)."""
    pooler: PoolerSpec | None = None
    """From the level below to this one (levels >= 1; default ``select``)."""
    upsampler: UpsamplerSpec | None = None
    """From this level back to the one below (levels >= 1; default ``multi-linear``)."""
    max_segments: int | None = attrs.field(default=None, validator=_positive)
    """Static shape: segments of this level kept per row. Derived from the context and the
    contraction when unset; boundaries beyond it are counted as dropped, never silently."""
    contraction: float | None = attrs.field(default=None, validator=_positive)
    """Bytes per segment of this level, for FLOPs accounting and static shapes. Measured on the
    embedded corpus with the spec's own splitters when unset."""


@attrs.frozen(kw_only=True)
class Spec:
    """A whole hierarchy: its levels and how to build and train it."""

    name: str = ""
    """A name for humans and run directories; defaults to the file's stem."""
    levels: tuple[LevelSpec, ...] = ()
    """Level 0 (bytes) first; one table per level."""
    stamp: Mapping[str, str] = attrs.field(factory=dict)
    """Package and plugin versions, written into a run directory's resolved spec."""

    @property
    def depth(self) -> int:
        """L, the number of pooling levels."""
        return max(len(self.levels) - 1, 0)

    def splitter_stack(self) -> SplitterStack:
        return SplitterStack(tuple(level.splitter for level in self.levels[1:] if level.splitter is not None))

    def check_splitting(self) -> list[SpecIssue]:
        """Problems that stop the spec from splitting text (what ``aunet split`` needs)."""
        issues = []
        if not self.levels:
            return [SpecIssue("levels", "no levels; add a [[levels]] table for the bytes and one per pooling level")]
        if self.levels[0].splitter is not None:
            issues.append(SpecIssue("levels[0].splitter", "level 0 is the byte level and has no splitter; "
                                    "put the first splitter in levels[1]"))
        for i, level in enumerate(self.levels[1:], start=1):
            if level.splitter is None:
                issues.append(SpecIssue(f"levels[{i}].splitter", "missing; every level above the bytes needs one, "
                                        'e.g. splitter = { kind = "whitespace" }'))
        numbers = [i for i, level in enumerate(self.levels) if i and level.splitter is not None]
        return issues + self.splitter_stack().check("levels", numbers)


# -- conversion ----------------------------------------------------------------------------------


class _Invalid(ValueError):
    """A leaf problem found while structuring; ``key`` extends the path (an unknown key)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.key = key


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, (list, tuple)):
        return "an array"
    return repr(value)


def _strict_int(value: Any, _: type) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(f"expected int, got {_describe(value)}")
    return value


def _strict_float(value: Any, _: type) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Invalid(f"expected float, got {_describe(value)}")
    return float(value)


def _strict_str(value: Any, _: type) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"expected string, got {_describe(value)}")
    return value


def _strict_bool(value: Any, _: type) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"expected true or false, got {_describe(value)}")
    return value


def _optional_arg(tp: Any) -> Any | None:
    """X for ``X | None``, else None."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0]
    return None


_SLOT_FAMILIES = {Splitter: Family.SPLITTER, StageSpec: Family.STAGE, PoolerSpec: Family.POOLER,
                  UpsamplerSpec: Family.UPSAMPLER}  # fmt: skip


def slot_family(tp: Any) -> Family | None:
    from aunet.core.components import AttentionSpec

    if tp is AttentionSpec:
        return Family.ATTENTION
    return _SLOT_FAMILIES.get(tp)


class SpecConverter:
    """cattrs converter for specs, bound to the kinds of one registry."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        c = self.cattrs = cattrs.Converter(detailed_validation=True, forbid_extra_keys=True)
        c.register_structure_hook(int, _strict_int)
        c.register_structure_hook(float, _strict_float)
        c.register_structure_hook(str, _strict_str)
        c.register_structure_hook(bool, _strict_bool)
        c.register_structure_hook_func(lambda t: slot_family(t) is not None, self._structure_slot)
        c.register_structure_hook_func(lambda t: _optional_arg(t) is not None, self._structure_optional)
        c.register_structure_hook_func(_is_homogeneous_tuple, self._structure_tuple)
        c.register_structure_hook_func(_is_str_mapping, self._structure_mapping)
        c.register_structure_hook_func(lambda t: isinstance(t, type) and issubclass(t, enum.Enum), _structure_enum)
        c.register_structure_hook_factory(lambda t: attrs.has(t) and slot_family(t) is None, self._attrs_structure_fn)
        c.register_unstructure_hook_func(attrs.has, self._unstructure_attrs)
        c.register_unstructure_hook_func(lambda t: isinstance(t, type) and issubclass(t, enum.Enum), lambda e: e.value)

    # structure ---------------------------------------------------------------------------------

    def structure(self, data: Any, cls: type) -> Any:
        """Structure ``data`` (parsed TOML) into ``cls``; SpecError listing every problem."""
        try:
            return self.cattrs.structure(data, cls)
        except Exception as exc:  # noqa: BLE001 - turned into path-qualified issues
            issues = _issues(exc, "")
            if not issues:
                raise
            raise SpecError(issues) from None

    def _structure_optional(self, value: Any, tp: Any) -> Any:
        return None if value is None else self.cattrs.structure(value, _optional_arg(tp))

    def _structure_tuple(self, value: Any, tp: Any) -> tuple:
        if not isinstance(value, (list, tuple)):
            raise _Invalid(f"expected an array, got {_describe(value)}")
        item_type = typing.get_args(tp)[0]
        out, errors = [], []
        for i, item in enumerate(value):
            try:
                out.append(self.cattrs.structure(item, item_type))
            except Exception as exc:  # noqa: BLE001
                exc.__notes__ = [*getattr(exc, "__notes__", []), IterableValidationNote(f"index {i}", i, item_type)]
                errors.append(exc)
        if errors:
            raise IterableValidationError("invalid items", errors, tp)
        return tuple(out)

    def _structure_mapping(self, value: Any, tp: Any) -> dict:
        if not isinstance(value, Mapping):
            raise _Invalid(f"expected a table, got {_describe(value)}")
        value_type = typing.get_args(tp)[1]
        return {str(k): self.cattrs.structure(v, value_type) for k, v in value.items()}

    def _structure_slot(self, value: Any, tp: Any) -> Any:
        family = slot_family(tp)
        if isinstance(value, str):
            value = {"kind": value}  # shorthand: splitter = "whitespace"
        if not isinstance(value, Mapping):
            raise _Invalid(f"expected a table with a kind, e.g. {{ kind = \"...\" }}, got {_describe(value)}")
        kinds = self.registry.kinds(family)
        kind = value.get("kind")
        if kind is None:
            raise _Invalid(f"missing; known {family.value} kinds: {known_list(kinds)}", key="kind")
        if not isinstance(kind, str):
            raise _Invalid(f"expected string, got {_describe(kind)}", key="kind")
        if kind not in kinds:
            raise _Invalid(
                f"unknown {family.value} '{kind}'; known: {known_list(kinds)}{did_you_mean(kind, kinds)}", key="kind"
            )
        rest = {k: v for k, v in value.items() if k != "kind"}
        return self.cattrs.structure(rest, kinds[kind].cls)

    def _attrs_structure_fn(self, cls: type) -> Callable[[Any, type], Any]:
        attrs.resolve_types(cls)
        fields = [f for f in attrs.fields(cls) if f.init]
        names = {f.alias or f.name: f for f in fields}

        def structure(value: Any, _: type) -> Any:
            if not isinstance(value, Mapping):
                raise _Invalid(f"expected a table, got {_describe(value)}")
            kwargs, errors = {}, []
            for key, item in value.items():
                field = names.get(key)
                if field is None:
                    if names:
                        hint = did_you_mean(str(key), names)
                        message = f"unknown key; known: {known_list(names)}{hint}"
                    else:
                        owner = f"'{cls.kind}'" if isinstance(getattr(cls, "kind", None), str) else cls.__name__
                        message = f"unknown key; {owner} takes no options"
                    errors.append(_Invalid(message, key=str(key)))
                    continue
                try:
                    kwargs[field.alias or field.name] = self.cattrs.structure(item, field.type)
                except Exception as exc:  # noqa: BLE001
                    exc.__notes__ = [*getattr(exc, "__notes__", []), AttributeValidationNote(key, key, field.type)]
                    errors.append(exc)
            for name, field in names.items():
                if name not in value and field.default is attrs.NOTHING:
                    errors.append(_Invalid("missing (required)", key=name))
            if errors:
                raise ClassValidationError(f"invalid {cls.__name__}", errors, cls)
            # Field validators run one by one so that every bad value is reported.
            with attrs.validators.disabled():
                obj = cls(**kwargs)
            for field in fields:
                if field.validator is None:
                    continue
                try:
                    field.validator(obj, field, getattr(obj, field.name))
                except (ValueError, TypeError) as exc:
                    errors.append(_Invalid(str(exc), key=field.alias or field.name))
            if errors:
                raise ClassValidationError(f"invalid {cls.__name__}", errors, cls)
            return obj

        return structure

    # unstructure -------------------------------------------------------------------------------

    def unstructure(self, obj: Any) -> Any:
        return self.cattrs.unstructure(obj)

    def _unstructure_attrs(self, obj: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        kind = getattr(type(obj), "kind", None)
        if isinstance(obj, (ComponentSpec, Splitter)) and isinstance(kind, str):
            out["kind"] = kind
        for field in attrs.fields(type(obj)):
            if not field.init:
                continue
            value = getattr(obj, field.name)
            if value is None:
                continue  # TOML has no null: absent means the default
            out[field.alias or field.name] = self._unstructure_value(value)
        return out

    def _unstructure_value(self, value: Any) -> Any:
        if isinstance(value, (tuple, list)):
            return [self._unstructure_value(v) for v in value]
        if isinstance(value, Mapping):
            return {k: self._unstructure_value(v) for k, v in value.items()}
        return self.cattrs.unstructure(value)


def _is_homogeneous_tuple(tp: Any) -> bool:
    args = typing.get_args(tp)
    return typing.get_origin(tp) is tuple and len(args) == 2 and args[1] is Ellipsis


def _is_str_mapping(tp: Any) -> bool:
    from collections import abc

    return typing.get_origin(tp) in (dict, abc.Mapping, typing.Mapping) and typing.get_args(tp)[:1] == (str,)


def _structure_enum(value: Any, tp: type[enum.Enum]) -> enum.Enum:
    try:
        return tp(value)
    except ValueError:
        known = [str(m.value) for m in tp]
        raise _Invalid(f"expected one of {', '.join(known)}, got {_describe(value)}{did_you_mean(str(value), known)}") from None


def _issues(exc: BaseException, path: str) -> list[SpecIssue]:
    """Path-qualified issues from the exception tree a structure call raised."""
    if isinstance(exc, (ClassValidationError, IterableValidationError)):
        out = []
        for sub in exc.exceptions:
            notes = [n for n in getattr(sub, "__notes__", []) if isinstance(n, (AttributeValidationNote, IterableValidationNote))]
            sub_path = path
            for note in notes[-1:]:
                if isinstance(note, AttributeValidationNote):
                    sub_path = _join(path, note.name)
                else:
                    sub_path = f"{path}[{note.index}]"
            out.extend(_issues(sub, sub_path))
        return out
    if isinstance(exc, _Invalid):
        return [SpecIssue(_join(path, exc.key) if exc.key else path, exc.message)]
    if isinstance(exc, (ValueError, TypeError)):
        return [SpecIssue(path, str(exc))]
    return []


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# -- files ---------------------------------------------------------------------------------------


def parse_spec(text: str, *, source: str = "<spec>", registry: Registry | None = None, name: str = "") -> Spec:
    """Structure a spec from TOML text; SpecError listing every problem."""
    registry = registry or default_registry()
    try:
        data = toml.loads(text)
    except toml.TOMLDecodeError as exc:
        raise SpecError([SpecIssue("", f"invalid TOML: {exc}")], source=source) from None
    try:
        spec = registry.converter().structure(data, Spec)
    except SpecError as exc:
        raise SpecError(exc.issues, source=source) from None
    if not spec.name and name:
        spec = attrs.evolve(spec, name=name)
    return spec


def load_spec(path: str | Path, *, registry: Registry | None = None) -> Spec:
    """Read and structure a spec file. Raises InputError for an unreadable file and SpecError
    (with every problem and its path) for a bad spec."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"spec file '{path}' does not exist") from None
    except IsADirectoryError:
        raise InputError(f"spec file '{path}' is a directory; give a .toml file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read spec file '{path}': {exc}") from None
    return parse_spec(text, source=str(path), registry=registry, name=path.stem)


def spec_to_dict(spec: Spec, *, registry: Registry | None = None) -> dict[str, Any]:
    registry = registry or default_registry()
    return registry.converter().unstructure(spec)


def dump_spec(spec: Spec, *, registry: Registry | None = None) -> str:
    """The spec as TOML; ``parse_spec(dump_spec(s)) == s``."""
    return toml.dumps(spec_to_dict(spec, registry=registry))
