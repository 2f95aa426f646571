"""Checkpoints that survive crashes: written atomically, verified when read.

A run directory holds ``spec.toml`` (the resolved spec, stamped with package and plugin
versions), ``metrics.jsonl``, TensorBoard events under ``tb/``, and ``checkpoints/``::

    checkpoints/step-00000250/model.safetensors   weights
    checkpoints/step-00000250/state.pt            optimizer, schedule, RNG states, data position
    checkpoints/step-00000250/meta.json           step, sizes and SHA-256 of the two files above
    checkpoints/latest                            the name of the newest complete checkpoint

A checkpoint is written into a temporary folder, every file is fsynced, the folder is renamed into
place and fsynced, and only then does ``latest`` (itself written to a temporary file, fsynced and
renamed) point at it; older checkpoints beyond ``keep`` are removed after that. A crash or Ctrl-C at
any moment leaves the previous checkpoint intact and ``latest`` naming a complete one. Reading
checks sizes and hashes, so a truncated or corrupt file is reported, not loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from aunet.core.errors import AunetError

CHECKPOINTS = "checkpoints"
LATEST = "latest"
FILES = ("model.safetensors", "state.pt")


class CheckpointError(AunetError):
    """A checkpoint that is missing, truncated or corrupt."""


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    """Write a small file so that readers see the old or the new content, never a mix."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    _fsync_file(tmp)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def save(run_dir: Path, step: int, model_state: dict[str, Any], state: dict[str, Any], *, keep: int,
         extra_meta: dict[str, Any] | None = None) -> Path:  # fmt: skip
    """Write checkpoint ``step`` atomically, point ``latest`` at it, prune old ones."""
    import torch
    from safetensors.torch import save_file

    root = run_dir / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(step)
    tmp = root / f".tmp-{checkpoint_name(step)}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file({k: v.detach().contiguous().cpu() for k, v in model_state.items()}, str(tmp / FILES[0]))
    torch.save(state, tmp / FILES[1])
    meta = {"step": step, "files": {}, **(extra_meta or {})}
    for name in FILES:
        _fsync_file(tmp / name)
        meta["files"][name] = {"bytes": (tmp / name).stat().st_size, "sha256": _sha256(tmp / name)}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    _fsync_file(tmp / "meta.json")
    _fsync_dir(tmp)
    if final.exists():  # a re-save of the same step (resume then immediate stop)
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    atomic_write_text(root / LATEST, final.name + "\n")
    _prune(root, keep)
    return final


def _prune(root: Path, keep: int) -> None:
    done = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-"))
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-step-*"):  # left by a crash during a save
        shutil.rmtree(stale, ignore_errors=True)


def latest(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run, or None if it has none."""
    root = run_dir / CHECKPOINTS
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    path = root / pointer.read_text(encoding="utf-8").strip()
    if not path.is_dir():
        raise CheckpointError(f"{pointer} names '{path.name}', which does not exist; the run directory was "
                              "changed by hand")  # fmt: skip
    return path


def resolve(path: str | Path) -> Path:
    """A checkpoint folder from either a run directory (its latest) or a checkpoint folder."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"--ckpt: '{path}' does not exist")
    if (p / "meta.json").is_file():
        return p
    found = latest(p) if p.is_dir() else None
    if found is None:
        raise CheckpointError(f"--ckpt: '{path}' is neither a checkpoint nor a run directory with one "
                              f"(no {CHECKPOINTS}/{LATEST})")  # fmt: skip
    return found


def verify(path: Path) -> dict[str, Any]:
    """meta.json of a checkpoint after checking every file's size and hash."""
    try:
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        files = meta["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt: unreadable meta.json ({exc})") from None
    for name in FILES:
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"checkpoint {path} is incomplete: {name} is missing")
        size, expected = file.stat().st_size, files.get(name, {})
        if size != expected.get("bytes"):
            raise CheckpointError(f"checkpoint {path} is truncated or corrupt: {name} has {size:,} bytes, "
                                  f"expected {expected.get('bytes')}")  # fmt: skip
        if _sha256(file) != expected.get("sha256"):
            raise CheckpointError(f"checkpoint {path} is corrupt: {name} does not match its SHA-256")
    return meta


def load(path: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(model state, training state, meta) of a verified checkpoint."""
    import torch
    from safetensors.torch import load_file

    meta = verify(path)
    try:
        weights = load_file(str(path / FILES[0]))
        state = torch.load(path / FILES[1], map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - whatever the reader says, the file is bad
        raise CheckpointError(f"checkpoint {path} cannot be read: {type(exc).__name__}: {exc}") from None
    return weights, state, meta
