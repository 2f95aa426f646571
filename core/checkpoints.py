"""The checkpoint format's names, and finding, verifying and reading a checkpoint's weights, which
loads nothing that can execute code (docs/guides/trust.md).

A checkpoint is a folder ``checkpoints/step-NNNNNNNN/`` of a run directory: ``model.safetensors``
(the weights), the trainer's files, and ``meta.json`` (the step, the spec, and the size and
SHA-256 of every file); ``checkpoints/latest`` names the newest complete one. Writing them, and
the trainer's and a sharded checkpoint's reading, are the job layer's
(``aunet.jobs.runs.checkpoint``, ``aunet.jobs.runs.saving``); what is here is what a model needs
to read weights, below every component: a splitter that holds a model reads its weights through
it (``aunet.splitters.entropy``), as the exported Hugging Face runtime does, which holds no jobs.

Nothing is pickled: tensors are safetensors and everything else JSON. Reading checks sizes and
hashes, so a truncated or corrupt file is reported, not loaded. Torch-free on import
(safetensors' torch reader is imported when tensors are read).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import attrs

from aunet.core.errors import AunetError

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


def sha256(path: Path) -> str:
    """The SHA-256 of a file, read a megabyte at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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


def read_tensors(path: Path, name: str) -> dict[str, Any]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path / name))
    except Exception as exc:  # noqa: BLE001 - whatever the reader says, the file is bad
        raise CheckpointError(f"checkpoint {path} cannot be read: {name}: {type(exc).__name__}: {exc}") from None


def load_weights(model: Any, weights: dict[str, Any], path: Path) -> None:
    """``weights`` (from ``read_tensors``) into ``model``; a CheckpointError naming checkpoint
    ``path`` where they do not match the model its spec built."""
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path} does not match its spec: {str(exc).splitlines()[0]}") from None
