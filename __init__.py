"""aunet: Autoregressive U-Nets (arXiv 2506.14761), tokenizer-free language models that read raw
bytes, pool them into words, word pairs and 4-word groups through a U-Net of transformer stages,
and predict the next byte.

The public API::

    spec = aunet.load_spec("aunet2-tiny")                 # a shipped spec, or a path to a TOML file
    model = aunet.build_model(spec, device="cpu")         # checked, defaults filled, built
    tokens = aunet.encode(b"The cat sat.")               # (T,) BOS + bytes
    levels = aunet.compute_levels(spec, b"The cat sat.") # (T,) BOS included, at the top level
    out = model(tokens[None, :-1], levels[None, :-1], targets=tokens[None, 1:])
    out.loss, out.logits, out.segments, out.dropped

    run = aunet.load_run("runs/aunet2-tiny-...")          # a trained model: .model, .spec, .encoding
    aunet.generate(run.model, [b"And God said, "], 100, encoding=run.encoding)  # KV-cached

Packages: ``aunet.core`` (contracts, registry, specs, levels, encodings, the assembler),
``aunet.plugins`` and ``aunet.splitters`` (the built-in components), ``aunet.jobs`` (data,
training, runs, evaluation, generation, experiments), ``aunet.cli`` (the command line, a command
per module), ``aunet.integrations`` (Hugging Face, lm-evaluation-harness), ``aunet.testing``
(property checks for plugin authors).
"""

from typing import Any

from aunet.core.convert import dump_spec
from aunet.core.registry import Registry, default_registry
from aunet.core.spec import Spec, resolve_spec
from aunet.core.version import version as _version

__version__ = _version()

# Torch-backed names load torch on first use, so that reading specs and splitting stay fast; a
# run's spec (RunSpec, and load_spec and parse_spec, which read one) comes from the job layer.
_LAZY = {
    "AUNet": "aunet.core.model",
    "RunSpec": "aunet.jobs.config",
    "load_spec": "aunet.jobs.config",
    "parse_spec": "aunet.jobs.config",
    "ModelOutput": "aunet.core.model",
    "ShapeMode": "aunet.core.model",
    "build_model": "aunet.core.model",
    "compute_levels": "aunet.core.model",
    "encode": "aunet.core.model",
    "generate": "aunet.jobs.inference.generate",
    "load_run": "aunet.jobs.runs.directory",
    "LoadedRun": "aunet.jobs.runs.directory",
}

__all__ = [
    "AUNet",
    "LoadedRun",
    "ModelOutput",
    "Registry",
    "RunSpec",
    "ShapeMode",
    "Spec",
    "__version__",
    "build_model",
    "compute_levels",
    "default_registry",
    "dump_spec",
    "encode",
    "generate",
    "load_run",
    "load_spec",
    "parse_spec",
    "resolve_spec",
]
assert set(__all__) >= set(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'aunet' has no attribute '{name}'")
