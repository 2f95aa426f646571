"""The plugin registry: which kinds of splitter, router, stage, pooler, upsampler, attention
backend and metric writer exist, and where each came from.

A ``Registry`` is created explicitly; nothing is loaded at import time, so every test can build a
fresh one. ``Registry.default()`` loads every plugin of the ``aunet`` entry-point group (the
built-ins are entry points of the ``aunet`` distribution, loaded exactly like third-party ones),
then checks for misspelt hooks. A kind registered twice is an error that names both origins.

Environment:
    AUNET_DISABLE_PLUGIN_AUTOLOAD=1: do not load third-party entry points (built-ins still load).
    AUNET_PLUGINS=a,b: with autoload disabled, load these entry points only.
"""

from __future__ import annotations

import enum
import importlib.metadata
import os
import re
from collections.abc import Callable
from typing import Any

import attrs
import pluggy

from aunet.core import hookspecs
from aunet.core.errors import PluginError, did_you_mean, known_list

ENTRY_POINT_GROUP = "aunet"
#: The entry-point group of command plugins (``aunet_add_commands``): loaded by the command line only.
COMMANDS_GROUP = "aunet.commands"
DISTRIBUTION = "aunet"
DISABLE_AUTOLOAD_ENV = "AUNET_DISABLE_PLUGIN_AUTOLOAD"
PLUGINS_ENV = "AUNET_PLUGINS"
_KIND_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")


class Family(enum.Enum):
    """The pluggable slots of a spec, with the hook that fills each."""

    SPLITTER = "splitter"
    ROUTER = "router"
    STAGE = "stage"
    POOLER = "pooler"
    UPSAMPLER = "upsampler"
    ATTENTION = "attention"
    METRIC_WRITER = "metric_writer"

    @property
    def label(self) -> str:
        """The family's name in messages (``unknown metric writer 'x'``)."""
        return self.value.replace("_", " ")

    @property
    def hook(self) -> str:
        return {
            Family.SPLITTER: "aunet_register_splitters",
            Family.ROUTER: "aunet_register_routers",
            Family.STAGE: "aunet_register_stages",
            Family.POOLER: "aunet_register_poolers",
            Family.UPSAMPLER: "aunet_register_upsamplers",
            Family.ATTENTION: "aunet_register_attention",
            Family.METRIC_WRITER: "aunet_register_metric_writers",
        }[self]

    @property
    def base(self) -> type:
        """The class every registered class of this family must subclass."""
        from aunet.core import components, splitter, writers

        return {
            Family.SPLITTER: splitter.Splitter,
            Family.ROUTER: components.RouterSpec,
            Family.STAGE: components.StageSpec,
            Family.POOLER: components.PoolerSpec,
            Family.UPSAMPLER: components.UpsamplerSpec,
            Family.ATTENTION: components.AttentionSpec,
            Family.METRIC_WRITER: writers.MetricWriterSpec,
        }[self]


@attrs.frozen
class Origin:
    """Where a plugin came from: an entry point of a distribution, or code."""

    plugin: str
    distribution: str | None = None
    version: str | None = None

    @property
    def builtin(self) -> bool:
        return self.distribution == DISTRIBUTION

    def __str__(self) -> str:
        if self.distribution is None:
            return f"plugin '{self.plugin}' (registered in code)"
        return f"plugin '{self.plugin}' of {self.distribution} {self.version}"


@attrs.frozen
class Registration:
    """One registered kind."""

    family: Family
    kind: str
    cls: type
    origin: Origin


class Registrar:
    """What a registration hook receives: typed ``add_...`` methods that record the origin."""

    def __init__(self, registry: Registry, origin: Origin) -> None:
        self._registry = registry
        self._origin = origin

    def add_splitter(self, cls: type) -> None:
        """Register a ``Splitter`` subclass under its ``kind``."""
        self._registry._add(Family.SPLITTER, cls, self._origin)

    def add_router(self, cls: type) -> None:
        """Register a ``RouterSpec`` subclass under its ``kind``."""
        self._registry._add(Family.ROUTER, cls, self._origin)

    def add_stage(self, cls: type) -> None:
        """Register a ``StageSpec`` subclass under its ``kind``."""
        self._registry._add(Family.STAGE, cls, self._origin)

    def add_pooler(self, cls: type) -> None:
        """Register a ``PoolerSpec`` subclass under its ``kind``."""
        self._registry._add(Family.POOLER, cls, self._origin)

    def add_upsampler(self, cls: type) -> None:
        """Register an ``UpsamplerSpec`` subclass under its ``kind``."""
        self._registry._add(Family.UPSAMPLER, cls, self._origin)

    def add_attention(self, cls: type) -> None:
        """Register an ``AttentionSpec`` subclass under its ``kind``."""
        self._registry._add(Family.ATTENTION, cls, self._origin)

    def add_metric_writer(self, cls: type) -> None:
        """Register a ``MetricWriterSpec`` subclass under its ``kind``."""
        self._registry._add(Family.METRIC_WRITER, cls, self._origin)


class Registry:
    """Registered kinds by family, and the plugin manager that found them."""

    def __init__(self) -> None:
        self._pm = pluggy.PluginManager(hookspecs.PROJECT)
        self._pm.add_hookspecs(hookspecs)
        self._kinds: dict[Family, dict[str, Registration]] = {family: {} for family in Family}
        self._origins: dict[str, Origin] = {}
        #: Whether the command plugins (``aunet.commands``) are loaded: the command line loads them once.
        self.commands_loaded = False
        #: Each command's name and the plugin that added it, once the command line has been built.
        self.commands: dict[str, Origin] = {}
        #: Bumped by every registration, so that what is derived from the kinds (the spec
        #: converter of ``aunet.core.spec``) knows when to rebuild.
        self.generation = 0

    @classmethod
    def default(cls) -> Registry:
        """A registry with every installed plugin loaded and checked."""
        registry = cls()
        registry.load_entry_points()
        registry.check_pending()
        return registry

    # -- loading ---------------------------------------------------------------------------------

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> int:
        """Load the plugins of an entry-point group (``aunet``: components; ``aunet.commands``:
        commands, which the command line loads); return how many were loaded."""
        autoload = os.environ.get(DISABLE_AUTOLOAD_ENV, "").strip().lower() in ("", "0", "false", "no")
        wanted = {name.strip() for name in os.environ.get(PLUGINS_ENV, "").split(",") if name.strip()}
        seen: set[tuple[str, str]] = set()
        named: set[str] = set()  # entry-point names in either of aunet's groups, for AUNET_PLUGINS
        count = 0
        for dist in importlib.metadata.distributions():
            dist_name = dist.metadata["Name"]
            for ep in dist.entry_points:
                if ep.group in (ENTRY_POINT_GROUP, COMMANDS_GROUP):
                    named.add(ep.name)
                if ep.group != group or (dist_name, ep.name) in seen:
                    continue
                seen.add((dist_name, ep.name))
                if not autoload and dist_name != DISTRIBUTION and ep.name not in wanted:
                    continue
                origin = Origin(ep.name, dist_name, dist.version)
                try:
                    plugin = ep.load()
                except Exception as exc:
                    raise PluginError(f"{origin}: cannot import '{ep.value}': {type(exc).__name__}: {exc}") from exc
                self.register(plugin, name=ep.name, origin=origin)
                count += 1
        missing = wanted - named
        if missing:
            raise PluginError(
                f"{PLUGINS_ENV} names {known_list(missing)}, but no installed distribution has "
                f"such an entry point in the '{ENTRY_POINT_GROUP}' or '{COMMANDS_GROUP}' group"
            )
        return count

    def register(self, plugin: object, *, name: str | None = None, origin: Origin | None = None) -> None:
        """Register a plugin object (usually a module) and run its registration hooks now."""
        name = name or getattr(plugin, "__name__", None) or repr(plugin)
        origin = origin or Origin(name)
        if name in self._origins:
            raise PluginError(f"{origin}: a plugin named '{name}' is already registered ({self._origins[name]})")
        try:
            self._pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"{origin}: {_one_line(exc)}") from exc
        self._origins[name] = origin
        registrar = Registrar(self, origin)
        for family in Family:
            for impl in getattr(self._pm.hook, family.hook).get_hookimpls():
                if impl.plugin is plugin:
                    impl.function(registry=registrar)
        self.generation += 1

    def check_pending(self) -> None:
        """Fail on hook implementations that match no hook (a misspelt ``aunet_register_...``)."""
        try:
            self._pm.check_pending()
        except pluggy.PluginValidationError as exc:
            origin = self._origins.get(self._pm.get_name(exc.plugin) or "", None)
            known = ", ".join([*(family.hook for family in Family), "aunet_add_commands"])
            raise PluginError(f"{origin or exc.plugin}: {_one_line(exc)}; the hooks are {known}") from exc

    def _add(self, family: Family, cls: Any, origin: Origin) -> None:
        if not isinstance(cls, type) or not issubclass(cls, family.base):
            raise PluginError(f"{origin}: add_{family.value} expects a subclass of {family.base.__name__}, got {cls!r}")
        if "__attrs_attrs__" not in vars(cls):  # its own decorator, not one inherited
            raise PluginError(f"{origin}: {cls.__name__} must be an attrs class (decorate it with @attrs.frozen)")
        kind = getattr(cls, "kind", None)
        if not isinstance(kind, str) or not _KIND_RE.match(kind):
            raise PluginError(
                f"{origin}: {cls.__name__}.kind must be a name of lowercase letters, digits and hyphens, got {kind!r}"
            )
        existing = self._kinds[family].get(kind)
        if existing is not None:
            raise PluginError(
                f"{family.label} kind '{kind}' is registered twice: {existing.cls.__qualname__} by "
                f"{existing.origin} and {cls.__qualname__} by {origin}"
            )
        self._kinds[family][kind] = Registration(family, kind, cls, origin)
        self.generation += 1

    # -- lookup ----------------------------------------------------------------------------------

    def kinds(self, family: Family) -> dict[str, Registration]:
        """The registered kinds of a family, by name."""
        return dict(self._kinds[family])

    def lookup(self, family: Family, kind: str) -> Registration:
        """The registration of ``kind``; KeyError with the known kinds and a suggestion if unknown."""
        try:
            return self._kinds[family][kind]
        except KeyError:
            known = self._kinds[family]
            raise KeyError(
                f"unknown {family.label} '{kind}'; known: {known_list(known)}{did_you_mean(kind, known)}"
            ) from None

    def command_hooks(self) -> list[tuple[Origin, Callable[..., None]]]:
        """(origin, function) of every ``aunet_add_commands`` implementation, built-ins first:
        the command line calls each with a registrar bound to its plugin's origin."""
        hooks = self._pm.hook.aunet_add_commands.get_hookimpls()
        found = [(self._origins[self._pm.get_name(impl.plugin)], impl.function) for impl in hooks]
        return sorted(found, key=lambda pair: not pair[0].builtin)

    @property
    def plugins(self) -> dict[str, Origin]:
        """Every registered plugin by name."""
        return dict(self._origins)

    def listing(self) -> dict[str, list[dict[str, Any]]]:
        """Families with their kinds, for ``aunet plugins --json``."""
        return {
            family.value: [
                {
                    "kind": reg.kind,
                    "class": f"{reg.cls.__module__}.{reg.cls.__qualname__}",
                    "plugin": reg.origin.plugin,
                    "distribution": reg.origin.distribution,
                    "version": reg.origin.version,
                    "builtin": reg.origin.builtin,
                    "summary": _summary(reg.cls),
                }
                for reg in sorted(self._kinds[family].values(), key=lambda r: r.kind)
            ]
            for family in Family
        }


def _one_line(exc: BaseException) -> str:
    return "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def _summary(cls: type) -> str:
    doc = (cls.__doc__ or "").strip().splitlines()
    return doc[0] if doc else ""


_default: Registry | None = None


def default_registry() -> Registry:
    """The process-wide registry of installed plugins, created on first use (not at import)."""
    global _default
    if _default is None:
        _default = Registry.default()
    return _default
