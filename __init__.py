"""aunet: Autoregressive U-Nets (arXiv 2506.14761), tokenizer-free language models that read raw
bytes, pool them into words, word pairs and 4-word groups through a U-Net of transformer stages,
and predict the next byte.

The public API::

    spec = aunet.load_spec("specs/aunet2-tiny.toml")    # a declarative hierarchy
    model = aunet.build_model(spec)                       # checked, defaults filled, built
    tokens = aunet.encode(b"The cat sat.")               # (T,) BOS + bytes
    levels = aunet.compute_levels(spec, b"The cat sat.") # (T,) BOS included, at the top level
    out = model(tokens[None, :-1], levels[None, :-1], targets=tokens[None, 1:])
    out.loss, out.logits, out.segments, out.dropped

Packages: ``aunet.core`` (interfaces, registry, specs), ``aunet.splitters`` (built-in splitters),
``aunet.plugins`` (the built-in plugins).
"""

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from aunet.core.registry import Registry, default_registry
from aunet.core.spec import Spec, dump_spec, load_spec, parse_spec, resolve_spec

try:
    __version__ = version("aunet")
except PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
    __version__ = "0+unknown"

# Torch-backed names load torch on first use, so that reading specs and splitting stay fast.
_MODEL_NAMES = ("AUNet", "ModelOutput", "ShapeMode", "build_model", "compute_levels", "encode")

__all__ = ["Registry", "Spec", "__version__", "default_registry", "dump_spec", "load_spec", "parse_spec",
           "resolve_spec", *_MODEL_NAMES]  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _MODEL_NAMES:
        from aunet.core import model

        return getattr(model, name)
    raise AttributeError(f"module 'aunet' has no attribute '{name}'")
