"""Reading and writing specs: TOML to ``Spec`` and back (cattrs, strict), spec files, and
``--set`` overrides (docs/method.md section 1).

Reading is strict: unknown keys, wrong types and unknown kinds are errors, all of them reported at
once, each with its path (``levels[1].splitter.kind: unknown splitter 'whitespce'; known: ...``).
The converter is built from a registry after plugins load, so third-party kinds work everywhere a
built-in does. The schema itself (the classes, their checks and defaults) is ``aunet.core.spec``.
"""

from __future__ import annotations

import enum
import math
import types
import typing
import weakref
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.errors import AttributeValidationNote, ClassValidationError, IterableValidationError, IterableValidationNote

from aunet.core import toml
from aunet.core.components import AttentionSpec, ComponentSpec, PoolerSpec, RouterSpec, StageSpec, UpsamplerSpec
from aunet.core.errors import InputError, SpecError, SpecIssue, did_you_mean, known_list
from aunet.core.registry import Family, Registry, default_registry
from aunet.core.spec import (
    OMIT_DEFAULT,
    Spec,
)
from aunet.core.splitter import Splitter
from aunet.core.validators import (
    FLOAT32_MAX,
)
from aunet.core.writers import MetricWriterSpec

#: A spec class: ``Spec``, or a subclass that adds tables (``RunSpec``).
S = TypeVar("S", bound=Spec)

#: How a spec file says None for a field whose default is something else (``clip = "none"``).
NONE = "none"


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
    if isinstance(value, int) and abs(value) > FLOAT32_MAX:
        raise _Invalid(f"{value:.3g} is too large: above {FLOAT32_MAX:.3g}, the largest float32")
    value = float(value)
    if not math.isfinite(value):
        raise _Invalid(f"expected a finite number, got {value}")
    if abs(value) > FLOAT32_MAX:
        raise _Invalid(f"{value:.3g} is too large: above {FLOAT32_MAX:.3g}, the largest float32")
    return value


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


_SLOT_FAMILIES = {
    Splitter: Family.SPLITTER,
    RouterSpec: Family.ROUTER,
    StageSpec: Family.STAGE,
    PoolerSpec: Family.POOLER,
    UpsamplerSpec: Family.UPSAMPLER,
    AttentionSpec: Family.ATTENTION,
    MetricWriterSpec: Family.METRIC_WRITER,
}


def slot_family(tp: Any) -> Family | None:
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
        except Exception as exc:
            issues = _issues(exc, "")
            if not issues:
                raise
            raise SpecError(issues) from None

    def _structure_optional(self, value: Any, tp: Any) -> Any:
        # TOML has no null: "none" spells None where the default is something else (clip = "none").
        if value is None or (isinstance(value, str) and value == NONE and _optional_arg(tp) is not str):
            return None
        return self.cattrs.structure(value, _optional_arg(tp))

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
            raise _Invalid(f'expected a table with a kind, e.g. {{ kind = "..." }}, got {_describe(value)}')
        kinds = self.registry.kinds(family)
        kind = value.get("kind")
        if kind is None:
            raise _Invalid(f"missing; known {family.label} kinds: {known_list(kinds)}", key="kind")
        if not isinstance(kind, str):
            raise _Invalid(f"expected string, got {_describe(kind)}", key="kind")
        if kind not in kinds:
            raise _Invalid(
                f"unknown {family.label} '{kind}'; known: {known_list(kinds)}{did_you_mean(kind, kinds)}", key="kind"
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
                    moved = getattr(cls, "MOVED", {}).get(key)
                    if moved:
                        message = f"moved: this is now {moved}"
                    elif names:
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
            # Every value that was read is checked, even when others were not: one round of errors.
            for name, item in kwargs.items():
                field = names[name]
                if field.validator is None:
                    continue
                try:
                    field.validator(None, field, item)
                except (ValueError, TypeError) as exc:
                    errors.append(_Invalid(str(exc), key=name))
            if errors:
                raise ClassValidationError(f"invalid {cls.__name__}", errors, cls)
            with attrs.validators.disabled():  # checked above, each with its own message
                return cls(**kwargs)

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
            if field.metadata.get(OMIT_DEFAULT) and value == field.default:
                continue  # an option added later: specs that do not use it dump as they did
            if value is None:
                if field.default is not None and field.default is not attrs.NOTHING:
                    out[field.alias or field.name] = NONE  # None that is not the default
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
        raise _Invalid(
            f"expected one of {', '.join(known)}, got {_describe(value)}{did_you_mean(str(value), known)}"
        ) from None


def _issues(exc: BaseException, path: str) -> list[SpecIssue]:
    """Path-qualified issues from the exception tree a structure call raised."""
    if isinstance(exc, (ClassValidationError, IterableValidationError)):
        out = []
        for sub in exc.exceptions:
            notes = [
                n
                for n in getattr(sub, "__notes__", [])
                if isinstance(n, (AttributeValidationNote, IterableValidationNote))
            ]
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


_CONVERTERS: weakref.WeakKeyDictionary[Registry, tuple[int, SpecConverter]] = weakref.WeakKeyDictionary()


def converter(registry: Registry | None = None) -> SpecConverter:
    """The spec converter for the kinds ``registry`` holds now (rebuilt after a registration:
    cattrs does not see kinds registered after a converter is made)."""
    registry = registry or default_registry()
    cached = _CONVERTERS.get(registry)
    if cached is None or cached[0] != registry.generation:
        cached = _CONVERTERS[registry] = (registry.generation, SpecConverter(registry))
    return cached[1]


def _parse_toml(text: str, *, source: str) -> dict[str, Any]:
    try:
        return toml.loads(text)
    except toml.TOMLDecodeError as exc:
        raise SpecError([SpecIssue("", f"invalid TOML: {exc}")], source=source) from None
    except RecursionError:
        raise SpecError(
            [SpecIssue("", "invalid TOML: nested too deeply for the parser; a spec nests a few tables deep")],
            source=source,
        ) from None
    except ValueError as exc:  # a number beyond what Python converts (an integer of 5,000 digits)
        why = "an integer of more digits than Python converts (4,300)" if "digits" in str(exc) else str(exc)
        raise SpecError([SpecIssue("", f"invalid TOML: {why}")], source=source) from None


def parse_spec(
    text: str,
    *,
    source: str = "<spec>",
    registry: Registry | None = None,
    name: str = "",
    cls: type[S] = Spec,
    ignore: Collection[str] = (),
) -> S:
    """Structure a spec of class ``cls`` from TOML text; SpecError listing every problem. The
    top-level tables in ``ignore`` are left out (a model's ``Spec`` read from a run's spec file
    ignores its ``train`` table; ``aunet.jobs.config.RunSpec`` reads it)."""
    data = _parse_toml(text, source=source)
    for key in ignore:
        data.pop(key, None)
    try:
        spec = converter(registry).structure(data, cls)
    except SpecError as exc:
        raise SpecError(exc.issues, source=source) from None
    if not spec.name and name:
        spec = attrs.evolve(spec, name=name)
    return spec


def spec_file(path: str | Path) -> Path:
    """The file a ``--spec`` argument names: a path, or else a shipped spec by name
    (``aunet3-tiny``, ``paper/aunet2-1b``, also ``specs/aunet3-tiny.toml`` from any directory)."""
    from aunet.core.resources import shipped_spec_names, spec_path

    p = Path(path)
    if p.exists():
        return p
    name = str(path).removeprefix("specs/").removesuffix(".toml")
    if name in shipped_spec_names():
        return spec_path(name)
    raise InputError(
        f"spec file '{path}' does not exist, and no shipped spec is named '{name}'; shipped: "
        f"{known_list(shipped_spec_names())}{did_you_mean(name, shipped_spec_names())}"
    )


def load_spec(path: str | Path, *, registry: Registry | None = None, cls: type[S] = Spec) -> S:
    """Read and structure a spec file, or a shipped spec by name (``load_spec("aunet3-tiny")``).
    Raises InputError for an unreadable file and SpecError (with every problem and its path) for
    a bad spec."""
    path = spec_file(path)
    return parse_spec(_read_spec_text(path), source=str(path), registry=registry, name=path.stem, cls=cls)


def _read_spec_text(path: Path) -> str:
    if path.is_dir():
        raise InputError(f"spec file '{path}' is a directory; give a .toml file")
    if not path.is_file():
        raise InputError(f"spec file '{path}' is not a regular file (a device or a pipe); give a .toml file")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise InputError(f"cannot read spec file '{path}': {exc.strerror or exc}") from None
    if len(raw) > MAX_SPEC_BYTES:
        raise InputError(f"spec file '{path}' is larger than {MAX_SPEC_BYTES // 1024} KiB; a spec is a small TOML file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"spec file '{path}' is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


#: A spec file is read only up to this size (``aunet spec check /dev/zero`` must not read forever).
MAX_SPEC_BYTES = 1 << 20


def spec_to_dict(spec: Spec, *, registry: Registry | None = None) -> dict[str, Any]:
    return converter(registry).unstructure(spec)


def dump_spec(spec: Spec, *, registry: Registry | None = None) -> str:
    """The spec as TOML; ``parse_spec(dump_spec(s)) == s``."""
    return toml.dumps(spec_to_dict(spec, registry=registry))
