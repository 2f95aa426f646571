"""Run directories and loading a trained model from one.

``aunet.load_run(DIR)`` is how Python (and ``aunet eval``, ``aunet generate``) gets a trained
model back: it reads the checkpoint's ``meta.json`` (which records the resolved spec) and its
``model.safetensors``, checks both, builds the model on the asked device, and nothing else; a
checkpoint written on a GPU loads on a CPU.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import attrs

from aunet.core.spec import Spec, parse_spec
from aunet.jobs import checkpoint

SPEC_FILE = "spec.toml"
RUN_FILE = "run.json"  # what the run was started on: the data


@attrs.frozen
class LoadedRun:
    """A trained model, with the spec it was built from and where it came from."""

    model: Any  # aunet.core.model.AUNet, in eval mode
    spec: Spec
    step: int
    checkpoint: Path


def load_run(path: str | Path, *, device: Any = "cpu") -> LoadedRun:
    """The model of a checkpoint folder, or of a run directory's newest checkpoint, on
    ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or a ``torch.device``)."""
    from aunet.core.model import build_model
    from aunet.jobs.devices import resolve_device

    device = resolve_device(device)
    ckpt = checkpoint.resolve(path)
    weights, meta = checkpoint.load_model(ckpt)
    if not isinstance(meta.get("spec"), str):
        raise checkpoint.CheckpointError(f"checkpoint {ckpt} records no spec in its meta.json")
    spec = parse_spec(meta["spec"], source=f"{ckpt}/meta.json")
    model = build_model(spec)
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise checkpoint.CheckpointError(f"checkpoint {ckpt} does not match its spec: "
                                         f"{str(exc).splitlines()[0]}") from None  # fmt: skip
    model.to(device).eval()
    return LoadedRun(model, model.spec, int(meta.get("step", 0)), ckpt)


def stamp(spec: Spec) -> Spec:
    """The spec with the versions of aunet and every loaded plugin written into it."""
    from aunet.core.registry import default_registry
    from aunet.core.version import version

    versions = {"aunet": version()}
    for name, origin in sorted(default_registry().plugins.items()):
        versions[f"plugin {name}"] = f"{origin.distribution or 'code'} {origin.version or ''}".strip()
    return attrs.evolve(spec, stamp=versions)


def default_out(spec: Spec) -> Path:
    return Path("runs") / f"{spec.name or 'run'}-{time.strftime('%Y%m%d-%H%M%S')}"
