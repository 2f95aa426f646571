"""aunet: Autoregressive U-Nets (arXiv 2506.14761), tokenizer-free language models that read raw
bytes, pool them into words, word pairs and 4-word groups through a U-Net of transformer stages,
and predict the next byte.

The public API::

    spec = aunet.load_spec("specs/aunet2-tiny.toml")   # a declarative hierarchy
    stack = spec.splitter_stack()                        # its splitters
    levels = stack.levels(b"The cat sat.")              # one level per byte

Packages: ``aunet.core`` (interfaces, registry, specs), ``aunet.splitters`` (built-in splitters),
``aunet.plugins`` (the built-in plugins).
"""

from importlib.metadata import PackageNotFoundError, version

from aunet.core.registry import Registry, default_registry
from aunet.core.spec import Spec, dump_spec, load_spec, parse_spec

try:
    __version__ = version("aunet")
except PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
    __version__ = "0+unknown"

__all__ = ["Registry", "Spec", "__version__", "default_registry", "dump_spec", "load_spec", "parse_spec"]
