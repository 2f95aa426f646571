"""aunet's core: the component interfaces, the plugin registry and the spec format.

Torch-free on import: the module contracts (``Stage``, ``Pooler``, ``Upsampler``, ``Router``,
``Routing``, ``AttentionBackend``, ``Layout``, ``LevelIndex``, ``DensePlan``, ``KVCache`` and their helpers, from
``aunet.core.modules``) load torch when first accessed.
"""

from typing import Any

from aunet.core.components import AttentionSpec, ComponentSpec, PoolerSpec, RouterSpec, StageSpec, UpsamplerSpec
from aunet.core.errors import AunetError, InputError, PluginError, SpecError, SpecIssue
from aunet.core.hookspecs import hookimpl
from aunet.core.levels import LevelStream, SplitterStack
from aunet.core.registry import Family, Registrar, Registry, default_registry
from aunet.core.splitter import Splitter
from aunet.core.text import INVALID, TABLE_SIZE, WHITE_SPACE, Chars, CharTable, decode
from aunet.core.writers import MetricRun, MetricWriter, MetricWriterSpec

_TORCH_NAMES = (
    "AttentionBackend",
    "DensePlan",
    "KVCache",
    "Layout",
    "LevelIndex",
    "Pooler",
    "Router",
    "Routing",
    "Stage",
    "Upsampler",
    "allowed",
    "gather_rows",
    "one_position",
    "where_rows",
)

__all__ = [
    "INVALID",
    "TABLE_SIZE",
    "WHITE_SPACE",
    "AttentionBackend",
    "AttentionSpec",
    "AunetError",
    "CharTable",
    "Chars",
    "ComponentSpec",
    "DensePlan",
    "Family",
    "InputError",
    "KVCache",
    "Layout",
    "LevelIndex",
    "LevelStream",
    "MetricRun",
    "MetricWriter",
    "MetricWriterSpec",
    "PluginError",
    "Pooler",
    "PoolerSpec",
    "Registrar",
    "Registry",
    "Router",
    "RouterSpec",
    "Routing",
    "SpecError",
    "SpecIssue",
    "Splitter",
    "SplitterStack",
    "Stage",
    "StageSpec",
    "Upsampler",
    "UpsamplerSpec",
    "allowed",
    "decode",
    "default_registry",
    "gather_rows",
    "hookimpl",
    "one_position",
    "where_rows",
]


def __getattr__(name: str) -> Any:
    if name in _TORCH_NAMES:
        from aunet.core import modules

        return getattr(modules, name)
    raise AttributeError(f"module 'aunet.core' has no attribute '{name}'")
