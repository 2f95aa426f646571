"""The checkpoint format, and finding, verifying and reading checkpoints, which loads nothing
that can execute code.

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

This module holds the format (the names above), finding checkpoints and reading them; writing
them, atomically (a crash or Ctrl-C at any moment leaves the previous checkpoint intact and
``latest`` naming a complete one), is ``aunet.jobs.runs.saving``'s. Reading checks sizes and
hashes, so a truncated or corrupt file is reported, not loaded.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import attrs

from aunet.core.errors import AunetError
from aunet.jobs.runtime.files import sha256

CHECKPOINTS = "checkpoints"
LATEST = "latest"
MODEL_FILE = "model.safetensors"
TRAINER_TENSORS = "trainer.safetensors"
TRAINER_JSON = "trainer.json"
SHARDS = "shards"
META = "meta.json"
FILES = (MODEL_FILE, TRAINER_TENSORS, TRAINER_JSON)


class CheckpointError(AunetError):
    """A checkpoint that is missing, truncated or corrupt, or one that could not be written."""


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


# -- finding and reading -------------------------------------------------------------------------


def latest_name(run_dir: Path) -> str | None:
    """What ``latest`` names, or None if it is missing or names no checkpoint folder (invalid
    UTF-8, a hundred kilobytes of text, a name that was never a checkpoint's)."""
    pointer = run_dir / CHECKPOINTS / LATEST
    try:
        with open(pointer, "rb") as f:
            raw = f.read(256)
        name = raw.decode("utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return name if re.fullmatch(r"step-\d{8,}", name) else None


def latest(run_dir: Path) -> Path | None:
    """The checkpoint ``latest`` names, if it names one that exists; else the newest complete one
    (``newest_complete``); None if the run has none."""
    name = latest_name(run_dir)
    if name is not None and (run_dir / CHECKPOINTS / name / META).is_file():
        return run_dir / CHECKPOINTS / name
    found = newest_complete(run_dir)[0]
    return found.path if found is not None else None


@attrs.frozen(eq=False)
class Verified:
    """A checkpoint whose every file matched its size and SHA-256 in this process, and its
    meta.json: what a resume reads without hashing again (``load_trainer``)."""

    path: Path
    meta: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.meta["step"])


def newest_complete(run_dir: Path) -> tuple[Verified | None, list[str]]:
    """The newest checkpoint whose files all verify, whatever ``latest`` says (or if it is
    missing), and notices for what was passed over."""
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return None, []
    notices = []
    named = latest_name(run_dir)
    candidates = sorted(
        (p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"step-\d{8,}", p.name)),
        key=lambda p: int(p.name.split("-")[1]),
        reverse=True,
    )
    for path in candidates:
        try:
            meta = verify(path)
        except CheckpointError as exc:
            notices.append(f"passing over {path.name}: {str(exc).removeprefix(f'checkpoint {path} ')}")
            continue
        if named != path.name:
            what = f"names {named}" if named else "is missing or names no checkpoint"
            notices.append(f"{root / LATEST} {what}; the newest complete checkpoint is {path.name}")
        return Verified(path, meta), notices
    return None, notices


def resolve(path: str | Path) -> Path:
    """A checkpoint folder from either a run directory (its latest) or a checkpoint folder."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"--ckpt: '{path}' does not exist")
    if (p / META).is_file():
        return p
    found = latest(p) if p.is_dir() else None
    if found is None:
        raise CheckpointError(
            f"--ckpt: '{path}' is neither a checkpoint nor a run directory with a complete "
            f"checkpoint (in {CHECKPOINTS}/)"
        )
    return found


def read_meta(path: Path) -> dict[str, Any]:
    """meta.json of a checkpoint, checked for shape (not the files it lists)."""
    try:
        with open(path / META, "rb") as f:
            raw = f.read(MAX_META_BYTES + 1)
        meta = json.loads(raw)
    except (OSError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt: unreadable meta.json ({exc})") from None
    if len(raw) > MAX_META_BYTES:
        raise CheckpointError(f"checkpoint {path} is corrupt: meta.json is larger than {MAX_META_BYTES // 1024} KiB")
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint {path} is corrupt: meta.json holds {type(meta).__name__}, not an object")
    files = meta.get("files")
    if not isinstance(files, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("bytes"), int) and isinstance(v.get("sha256"), str)
        for v in files.values()
    ):
        raise CheckpointError(
            f'checkpoint {path} is corrupt: meta.json\'s "files" is not a table of sizes and SHA-256 hashes'
        )
    step = meta.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise CheckpointError(f"checkpoint {path} is corrupt: meta.json records no step (got {step!r})")
    return meta


#: meta.json holds the spec, a few figures and a BPE model's tokenizer; anything far larger is not one.
MAX_META_BYTES = 64 << 20


def verify(path: Path, names: tuple[str, ...] | None = None) -> dict[str, Any]:
    """meta.json of a checkpoint after checking the size and hash of each of ``names`` (default:
    every file a checkpoint of its format holds)."""
    meta = read_meta(path)
    files = meta["files"]
    if names is None:
        names = tuple(files) if meta.get("format") == "sharded" else FILES
    for name in names:
        file = path / name
        expected = files.get(name)
        if not isinstance(expected, dict):
            raise CheckpointError(f"checkpoint {path} records no {name} in its meta.json")
        if not file.is_file():
            raise CheckpointError(f"checkpoint {path} is incomplete: {name} is missing")
        size = file.stat().st_size
        if size != expected.get("bytes"):
            raise CheckpointError(
                f"checkpoint {path} is truncated or corrupt: {name} has {size:,} bytes, "
                f"expected {expected.get('bytes')}"
            )
        try:
            digest = sha256(file)
        except OSError as exc:
            raise CheckpointError(f"checkpoint {path} cannot be read: {name}: {exc.strerror or exc}") from None
        if digest != expected.get("sha256"):
            raise CheckpointError(f"checkpoint {path} is corrupt: {name} does not match its SHA-256")
    return meta


def _read_tensors(path: Path, name: str) -> dict[str, Any]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path / name))
    except Exception as exc:  # noqa: BLE001 - whatever the reader says, the file is bad
        raise CheckpointError(f"checkpoint {path} cannot be read: {name}: {type(exc).__name__}: {exc}") from None


def load_model(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(weights, meta) of a verified checkpoint: what evaluation and generation need, no more. A
    sharded checkpoint is read whole (its shards joined)."""
    meta = read_meta(path)
    if meta.get("format") == "sharded":
        verify(path)
        return _read_sharded(path, "model."), meta
    verify(path, (MODEL_FILE,))
    return _read_tensors(path, MODEL_FILE), meta


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
        weights, tensors = _read_tensors(path, MODEL_FILE), _read_tensors(path, TRAINER_TENSORS)
    return TrainerFiles(weights, tensors, read_trainer_json(path))


def read_trainer_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / TRAINER_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read: {TRAINER_JSON}: {exc}") from None
