"""Writing checkpoints so that a crash at any moment leaves a complete one (the format is
``aunet.jobs.runs.checkpoint``'s).

A checkpoint is written into a temporary folder, every file is fsynced, the folder is renamed into
place and fsynced, and only then does ``latest`` (itself written to a temporary file, fsynced and
renamed) point at it; older checkpoints beyond ``keep`` are removed after that. A crash or Ctrl-C at
any moment leaves the previous checkpoint intact and ``latest`` naming a complete one. A write that
fails (a full disk, a read-only folder) removes what it wrote and is one ``CheckpointError``; in a
distributed run every process learns of it and raises with the others (``save``).
``check_writable`` finds an unwritable run directory before any training.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from aunet.jobs.runs.checkpoint import (
    CHECKPOINTS,
    LATEST,
    META,
    MODEL_FILE,
    SHARDS,
    TRAINER_JSON,
    TRAINER_TENSORS,
    CheckpointError,
    checkpoint_name,
)
from aunet.jobs.runtime.files import (
    advice,
    atomic_write_text,
    file_mode,
    fsync_dir,
    fsync_file,
    sha256,
    write_error_text,
)


def save(
    run_dir: Path,
    step: int,
    model_state: dict[str, Any],
    trainer_tensors: dict[str, Any],
    trainer_json: dict[str, Any],
    *,
    keep: int,
    extra_meta: dict[str, Any] | None = None,
    world: Any = None,
    sharded: bool = False,
) -> Path:
    """Write checkpoint ``step`` atomically, point ``latest`` at it, prune old ones. A write that
    fails (a full disk, a read-only folder) leaves the previous checkpoints as they were, removes
    what it wrote, and is one CheckpointError saying what to free or fix.

    In a distributed run (``world``) every process calls this: with ``sharded`` each writes its
    shards; the main process writes the rest and moves the checkpoint into place. Every process
    reaches every collective whatever fails where: the processes agree after each phase (one
    small all-reduce) and all raise together, so a failed save never leaves one process waiting
    for another."""
    from aunet.jobs.runtime.distributed import SINGLE

    world = world or SINGLE
    root = run_dir / CHECKPOINTS
    tmp = root / f".tmp-{checkpoint_name(step)}"
    phases = (
        (world.main, lambda: _prepare(root, tmp)),
        (sharded or world.main, lambda: (_save_shards if sharded else _save_whole)(tmp, model_state, trainer_tensors)),
        (world.main, lambda: _finish(root, tmp, step, trainer_json, keep, extra_meta, sharded)),
    )
    for mine, phase in phases:
        failed = _attempt(phase) if mine else None
        _agree(world, failed, root, tmp, step)
    return root / checkpoint_name(step)


def check_writable(run_dir: Path) -> None:
    """InputError now, before any training, when checkpoints cannot be written in ``run_dir``
    (a read-only or full disk, a file where ``checkpoints/`` goes): better than a run that
    trains until its first checkpoint and then loses it."""
    from aunet.core.errors import InputError

    root = run_dir / CHECKPOINTS
    probe = root / f".probe-{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as f:
            f.write(b"aunet")
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise InputError(f"cannot write checkpoints in {root}: {write_error_text(exc)}{advice(exc, root)}") from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()


def _prepare(root: Path, tmp: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    if tmp.exists() or tmp.is_symlink():
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp)
        else:
            tmp.unlink()
    tmp.mkdir()


def _attempt(phase: Any) -> BaseException | None:
    """Run one phase of a save; the write error it met, if any (a full disk surfaces as an
    OSError, safetensors' SafetensorError or torch.distributed.checkpoint's CheckpointException)."""
    try:
        phase()
    except BaseException as exc:
        if not isinstance(exc, OSError) and not _is_write_error(exc):
            raise
        return exc
    return None


def _is_write_error(exc: BaseException) -> bool:
    names = {type(exc).__name__} | {cls.__name__ for cls in type(exc).__mro__}
    return bool(names & {"SafetensorError", "CheckpointException"})


def _agree(world: Any, failed: BaseException | None, root: Path, tmp: Path, step: int) -> None:
    """Every process learns whether any failed (a collective every process reaches), and then
    all raise: the one that failed says why, the others that it did."""
    import torch

    flag = torch.tensor([world.rank + 1 if failed is not None else 0])
    world.all_reduce(flag, op="max")
    culprit = int(flag.item()) - 1
    if culprit < 0:
        return
    if world.main:
        _remove(tmp)
    if failed is None:  # another process failed, and says why
        error = CheckpointError(
            f"checkpoint {checkpoint_name(step)} was not written: process {culprit} could not "
            "write its part (its error says why); the previous checkpoints are intact"
        )
    else:
        error = CheckpointError(
            f"cannot write checkpoint {checkpoint_name(step)} in {root}: {write_error_text(failed)}"
            f"{advice(failed, root)}; the previous checkpoints are intact"
        )
    error.rank_local = True
    raise error


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def _save_whole(tmp: Path, model_state: dict[str, Any], trainer_tensors: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in model_state.items()}, str(tmp / MODEL_FILE))
    save_file({k: v.detach().contiguous().cpu() for k, v in trainer_tensors.items()}, str(tmp / TRAINER_TENSORS))


def _save_shards(tmp: Path, model_state: dict[str, Any], trainer_tensors: dict[str, Any]) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageWriter

    state = {f"model.{k}": v for k, v in model_state.items()} | dict(trainer_tensors)
    dcp.save(state, storage_writer=HuggingFaceStorageWriter(str(tmp / SHARDS), save_distributed=True))


def _finish(
    root: Path,
    tmp: Path,
    step: int,
    trainer_json: dict[str, Any],
    keep: int,
    extra_meta: dict[str, Any] | None,
    sharded: bool,
) -> Path:
    final = root / checkpoint_name(step)
    (tmp / TRAINER_JSON).write_text(json.dumps(trainer_json), encoding="utf-8")
    names = [TRAINER_JSON] + (
        [f"{SHARDS}/{p.name}" for p in sorted((tmp / SHARDS).glob("*.safetensors"))]
        if sharded
        else [MODEL_FILE, TRAINER_TENSORS]
    )
    meta = {"step": step, "format": "sharded" if sharded else "whole", "files": {}, **(extra_meta or {})}
    mode = file_mode()
    for name in names:
        os.chmod(tmp / name, mode)
        fsync_file(tmp / name)
        meta["files"][name] = {"bytes": (tmp / name).stat().st_size, "sha256": sha256(tmp / name)}
    (tmp / META).write_text(json.dumps(meta, indent=1), encoding="utf-8")
    fsync_file(tmp / META)
    if sharded:
        fsync_dir(tmp / SHARDS)
    fsync_dir(tmp)
    if final.exists():  # a re-save of the same step (resume then immediate stop)
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(root)
    atomic_write_text(root / LATEST, final.name + "\n")
    _prune(root, keep)
    return final


def _prune(root: Path, keep: int) -> None:
    done = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-"))
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-step-*"):  # left by a crash during a save
        shutil.rmtree(stale, ignore_errors=True)
