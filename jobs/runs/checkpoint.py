"""Checkpoints as the jobs read them: the format, the optimizer's state, sharded checkpoints and
the trainer's files; nothing that is loaded can execute code.

A run directory holds ``spec.toml`` (the resolved spec, stamped with package and plugin
versions), ``run.json``, ``metrics.jsonl``, TensorBoard events under ``tb/``, and ``checkpoints/``::

    checkpoints/step-00000250/model.safetensors     weights
    checkpoints/step-00000250/trainer.safetensors   optimizer tensors (keyed by parameter name)
    checkpoints/step-00000250/trainer.json          step, elapsed time, data position, optimizer
                                                    hyper-parameters, every process's RNG states
    checkpoints/step-00000250/meta.json             step, the spec, sizes and SHA-256 of the files
    checkpoints/latest                              the name of the newest complete checkpoint

A run sharded with FSDP2 writes ``shards/shard-0000R-model-00001-of-00001.safetensors`` instead
of the two safetensors files: every process writes its own shards of the weights and optimizer
state through ``torch.distributed.checkpoint`` (its safetensors storage, whose index is the
files' own headers: no pickled metadata), ``meta.json`` says ``"format": "sharded"``, and any
number of processes reads it back (``torch.distributed.checkpoint`` reshards), one process
without torchrun included (the tensors are then read whole).

Nothing is pickled: tensors are safetensors and everything else JSON, so loading a checkpoint
downloaded from elsewhere cannot run code. Evaluation and generation read only
``model.safetensors`` and ``meta.json``.

The format's names, finding checkpoints, verifying them and reading their weights are
``aunet.core.checkpoints``'s (below every component: a splitter that holds a model reads through
it), re-exported here; this module adds what only jobs need: the optimizer's state as tensors and
JSON, sharded checkpoints, and the trainer's files. Writing checkpoints, atomically (a crash or
Ctrl-C at any moment leaves the previous checkpoint intact and ``latest`` naming a complete one),
is ``aunet.jobs.runs.saving``'s.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs

from aunet.core.checkpoints import (  # noqa: F401 - the format and its reading, re-exported for the jobs
    CHECKPOINTS,
    FILES,
    LATEST,
    MAX_META_BYTES,
    META,
    MODEL_FILE,
    SHARDS,
    TRAINER_JSON,
    TRAINER_TENSORS,
    CheckpointError,
    Verified,
    latest,
    latest_name,
    load_weights,
    newest_complete,
    read_meta,
    read_tensors,
    resolve,
    sha256,
    verify,
)


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


# -- optimizer state as tensors and JSON ---------------------------------------------------------


def flatten_optimizer(state_dict: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """An optimizer state dict keyed by parameter names (``get_state_dict``) as (tensors, JSON):
    tensors under ``optimizer.<parameter>.<name>``; non-tensor values and the param groups in
    JSON."""
    import torch

    tensors: dict[str, Any] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param, values in state_dict["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{param}.{name}"] = value
            else:
                scalars.setdefault(str(param), {})[name] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """The inverse of ``flatten_optimizer`` (a state name has no dot; a parameter name may)."""
    state: dict[str, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            param, name = key.removeprefix("optimizer.").rsplit(".", 1)
            state.setdefault(param, {})[name] = value
    for param, values in data.get("scalars", {}).items():
        state.setdefault(param, {}).update(values)
    return {"state": state, "param_groups": data["param_groups"]}


def load_model(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(weights, meta) of a verified checkpoint: what evaluation and generation need, no more. A
    sharded checkpoint is read whole (its shards joined)."""
    meta = read_meta(path)
    if meta.get("format") == "sharded":
        verify(path)
        return _read_sharded(path, "model."), meta
    verify(path, (MODEL_FILE,))
    return read_tensors(path, MODEL_FILE), meta


def _read_sharded(path: Path, prefix: str | None = None) -> dict[str, Any]:
    """The tensors of a sharded checkpoint, whole (all of them, or those under ``prefix``, which
    is then removed from their names)."""
    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageReader

    try:
        reader = HuggingFaceStorageReader(str(path / SHARDS))
        metadata = reader.read_metadata()
        state = {}
        for key, info in metadata.state_dict_metadata.items():
            if prefix is None or key.startswith(prefix):
                state[key] = torch.empty(tuple(info.size), dtype=info.properties.dtype)
        import warnings

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load(state, storage_reader=HuggingFaceStorageReader(str(path / SHARDS)), no_dist=True)
    except Exception as exc:  # noqa: BLE001 - whatever the reader says, the files are bad
        raise CheckpointError(f"checkpoint {path} cannot be read: {type(exc).__name__}: {exc}") from None
    return {k.removeprefix(prefix): v for k, v in state.items()} if prefix else state


def load_sharded_into(found: Verified, state: dict[str, Any]) -> None:
    """Read a verified sharded checkpoint into ``state`` (this process's shards, in place): any
    number of processes reads any other number's checkpoint."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageReader

    path = found.path
    try:
        dcp.load(state, storage_reader=HuggingFaceStorageReader(str(path / SHARDS)))
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"checkpoint {path} cannot be read: {type(exc).__name__}: {exc}") from None


def check_resumable(found: Verified) -> None:
    """CheckpointError for a checkpoint no trainer can continue from (an older aunet's pickle)."""
    if "state.pt" in found.meta["files"]:
        raise CheckpointError(
            f"checkpoint {found.path} was written by an older aunet with a pickled state.pt, which "
            "aunet no longer loads (a pickle can run code); `aunet eval` and `aunet generate` "
            "still read its weights, but it cannot be resumed"
        )


@attrs.frozen(eq=False)
class TrainerFiles:
    """What ``load_trainer`` reads: the weights, the trainer's tensors (the optimizer's, flat)
    and its JSON (counters, data position, RNG states, the optimizer's scalars)."""

    weights: dict[str, Any]
    tensors: dict[str, Any]
    counters: dict[str, Any]


def load_trainer(found: Verified) -> TrainerFiles:
    """The trainer's files of a verified checkpoint, whole (for ``--resume`` on one process, or
    under DDP): read, not hashed again."""
    check_resumable(found)
    path, meta = found.path, found.meta
    if meta.get("format") == "sharded":
        everything = _read_sharded(path)
        weights = {k.removeprefix("model."): v for k, v in everything.items() if k.startswith("model.")}
        tensors = {k: v for k, v in everything.items() if not k.startswith("model.")}
    else:
        weights, tensors = read_tensors(path, MODEL_FILE), read_tensors(path, TRAINER_TENSORS)
    return TrainerFiles(weights, tensors, read_trainer_json(path))


def read_trainer_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / TRAINER_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read: {TRAINER_JSON}: {exc}") from None
