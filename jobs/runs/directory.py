"""Run directories: what a run holds, who holds it, and loading a trained model from one.

A run directory holds ``spec.toml`` (the resolved spec), ``run.json`` (the data it trains on,
with a fingerprint, and the history of its invocations), ``metrics.jsonl``, ``tb/`` and
``checkpoints/`` (``aunet.jobs.runs.checkpoint``). Every checkpoint's ``meta.json`` repeats the spec and
the data record, so a run whose ``spec.toml`` or ``run.json`` was deleted is recovered from its
newest checkpoint (with a notice).

One process at a time: ``RunLock`` holds an exclusive ``flock`` on ``.lock`` while a run trains; a
second ``aunet train`` on the same folder is refused with the holder's process id. The kernel
releases the lock when its process dies, so a lock left by a killed run is simply taken over.

``aunet.load_run(DIR)`` is how Python (and ``aunet eval``, ``aunet generate``) gets a trained
model back: it reads the checkpoint's ``meta.json`` and ``model.safetensors``, checks both, builds
the model on the asked device, and nothing else; a checkpoint written on a GPU loads on a CPU.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import socket
import time
from pathlib import Path
from typing import Any

import attrs

from aunet.core.encoding import Encoding
from aunet.core.errors import InputError
from aunet.core.spec import Spec
from aunet.jobs.config import parse_spec
from aunet.jobs.data.corpus import EMBEDDED_PREFIX
from aunet.jobs.runs import checkpoint
from aunet.jobs.runtime.files import advice
from aunet.plugins.metric_writers import truncate_rows

SPEC_FILE = "spec.toml"
RUN_FILE = "run.json"  # the data the run trains on (path and fingerprint) and its history
LOCK_FILE = ".lock"
METRICS_FILE = "metrics.jsonl"


@attrs.frozen
class LoadedRun:
    """A trained model, with the spec it was built from, how it reads text, and where it came from."""

    model: Any  # aunet.core.model.AUNet, in eval mode
    spec: Spec
    encoding: Encoding  # what the model reads: bytes and their levels, or a BPE run's tokens
    step: int
    checkpoint: Path
    data: dict[str, Any] = attrs.field(factory=dict)  # the run's data record (``RunRecord``), if known


def load_run(path: str | Path, *, device: Any = "cpu") -> LoadedRun:
    """The model of a checkpoint folder, or of a run directory's newest complete checkpoint, on
    ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or a ``torch.device``)."""
    from aunet.core.model import build_model
    from aunet.jobs.data.encodings import saved_encoding
    from aunet.jobs.runtime.devices import resolve_device

    device = resolve_device(device)
    ckpt, weights, meta = _read_newest(path)
    if not isinstance(meta.get("spec"), str):
        raise checkpoint.CheckpointError(f"checkpoint {ckpt} records no spec in its meta.json")
    spec = parse_spec(meta["spec"], source=f"{ckpt}/meta.json")
    model = build_model(spec)
    checkpoint.load_weights(model, weights, ckpt)
    encoding = saved_encoding(model.spec, meta, source=f"{ckpt}/meta.json")
    model.to(device).eval()
    data = meta.get("run") if isinstance(meta.get("run"), dict) else {}
    return LoadedRun(model, model.spec, encoding, int(meta["step"]), ckpt, data)


#: Times a reader follows a run that prunes the checkpoint it is reading (``keep = 1``).
READ_RETRIES = 5


def _read_newest(path: str | Path) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """(checkpoint, weights, meta) of a checkpoint folder, or of a run directory's newest complete
    checkpoint. A training run may prune the checkpoint being read (``keep = 1``): the reader
    then reads the run's next newest one, rather than failing on a file that vanished."""
    for _ in range(READ_RETRIES):
        ckpt = checkpoint.resolve(path)
        try:
            weights, meta = checkpoint.load_model(ckpt)
            return ckpt, weights, meta
        except (checkpoint.CheckpointError, OSError):
            if ckpt.exists() or Path(path).resolve() == ckpt.resolve():
                if not ckpt.exists():
                    raise checkpoint.CheckpointError(
                        f"checkpoint {ckpt} was removed while it was read (its run "
                        "pruned it); give the run directory to read its newest"
                    ) from None
                raise
    raise checkpoint.CheckpointError(
        f"--ckpt: the checkpoints of '{path}' were pruned {READ_RETRIES} times while "
        "being read; read a copy, or raise train.checkpoint.keep"
    )


def stamp(spec: Spec) -> Spec:
    """The spec with the versions of aunet and every loaded plugin written into it."""
    from aunet.core.registry import default_registry
    from aunet.core.version import version

    versions = {"aunet": version()}
    for name, origin in sorted(default_registry().plugins.items()):
        versions[f"plugin {name}"] = f"{origin.distribution or 'code'} {origin.version or ''}".strip()
    return attrs.evolve(spec, stamp=versions)


def default_out(spec: Spec) -> Path:
    """``runs/NAME-DATE-TIME`` with the spec's name made safe for a folder name (never a path)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", spec.name or "run").strip(".-") or "run"
    return Path("runs") / f"{name[:80]}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_out(path: Path, *, what: str = "the run") -> None:
    """``--out`` must be a folder or not exist yet, and no part of it a file."""
    if path.exists() and not path.is_dir():
        raise InputError(f"--out: '{path}' is a file; give a folder for {what}")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise InputError(f"--out: '{path}' cannot be a folder: '{parent}' is a file")


# -- one process per run -------------------------------------------------------------------------


class RunLock:
    """An exclusive lock on a run directory for as long as a process trains in it."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_FILE
        self._file: Any = None

    def __enter__(self) -> RunLock:
        try:
            self._file = open(self.path, "a+", encoding="utf-8")
        except OSError as exc:
            raise InputError(
                f"cannot lock {self.path.parent}: {exc.strerror or exc}{advice(exc, self.path.parent)}"
            ) from None
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read(200).strip() or "another process"
            self._file.close()
            raise InputError(
                f"'{self.path.parent}' is in use: {holder} is training in it; wait for it to finish "
                "or stop it (Ctrl-C saves a checkpoint), then --resume"
            ) from None
        try:  # who holds it, for the refusal above (a full disk only loses this courtesy)
            self._file.seek(0)
            self._file.truncate()
            self._file.write(
                f"aunet process {os.getpid()} on {socket.gethostname()} (since {time.strftime('%H:%M:%S')})"
            )
            self._file.flush()
        except OSError:
            pass
        return self

    @property
    def current(self) -> bool:
        """Whether the file this lock holds is still the one at its path (a run directory removed
        and made again meanwhile holds another)."""
        try:
            return os.fstat(self._file.fileno()).st_ino == os.stat(self.path).st_ino
        except OSError:
            return False

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


class RunClaim:
    """A run directory claimed for one invocation of ``aunet train``: created if it is missing,
    and locked (``RunLock``) before anything looks inside, so that of several processes started
    together on one ``--out`` exactly one goes on. A directory this claim created for a run that
    never started (``started`` is never called: bad data, a bad spec) is removed again on exit,
    with the parents it created, so nothing is left behind."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.created: list[Path] = []  # folders made here, deepest first
        self.lock: RunLock | None = None
        self._started = False

    def __enter__(self) -> RunClaim:
        for _ in range(100):  # another claim may remove the folder between our mkdir and our lock
            missing = [p for p in (self.run_dir, *self.run_dir.parents) if not p.exists()]
            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise InputError(
                    f"--out: cannot create '{self.run_dir}': {exc.strerror or exc}{advice(exc, self.run_dir.parent)}"
                ) from None
            lock = RunLock(self.run_dir).__enter__()
            if lock.current:
                self.lock = lock
                self.created = [p for p in missing if p.is_dir()]
                return self
            lock.__exit__()
        raise InputError(f"--out: '{self.run_dir}' keeps disappearing while aunet claims it; choose another --out")

    def started(self) -> None:
        """The run has written its files: the directory is its from now on, whatever happens."""
        self._started = True

    def __exit__(self, *exc: object) -> None:
        if not self._started and self.created:
            # Unlink the lock first: a claim waiting on it sees the folder go (``RunLock.current``).
            with contextlib.suppress(OSError):
                (self.run_dir / LOCK_FILE).unlink()
            for folder in self.created:
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only if empty: never anything a user put there
        if self.lock is not None:
            self.lock.__exit__()
            self.lock = None


# -- run.json --------------------------------------------------------------------------------------


@attrs.frozen
class RunRecord:
    """What ``run.json`` holds: the data (resolved path, None for the embedded corpus, and its
    fingerprint) and one history entry per invocation (the step it started at and what changed)."""

    data: str | None
    fingerprint: dict[str, Any]
    history: tuple[dict[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"data": self.data, "fingerprint": self.fingerprint, "history": list(self.history)}

    @classmethod
    def from_json(cls, value: Any, where: str) -> RunRecord:
        if not isinstance(value, dict) or not (value.get("data") is None or isinstance(value.get("data"), str)):
            raise InputError(f'{where} is not a run record (expected an object with a "data" path or null)')
        fingerprint = value.get("fingerprint") if isinstance(value.get("fingerprint"), dict) else {}
        history = value.get("history") if isinstance(value.get("history"), list) else []
        return cls(value["data"], fingerprint, tuple(h for h in history if isinstance(h, dict)))

    def with_entry(self, entry: dict[str, Any]) -> RunRecord:
        return attrs.evolve(self, history=(*self.history, entry))


def read_record(run_dir: Path) -> RunRecord | None:
    """``run.json``, or None if it is missing; InputError if it is not one."""
    path = run_dir / RUN_FILE
    if not path.exists():
        return None
    try:
        return RunRecord.from_json(json.loads(path.read_text(encoding="utf-8")), str(path))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} is unreadable ({exc}); delete it to recover it from the newest checkpoint") from None


def read_run_spec(run_dir: Path) -> Spec | None:
    """``spec.toml``, or None if it is missing."""
    path = run_dir / SPEC_FILE
    if not path.exists():
        return None
    if not path.is_file():
        raise InputError(f"{path} is not a file")
    return parse_spec(path.read_text(encoding="utf-8", errors="replace"), source=str(path))


# -- metrics.jsonl on resume ----------------------------------------------------------------------


def truncate_metrics(run_dir: Path, step: int) -> int:
    """Drop the records of ``metrics.jsonl`` a resumed run will write again (steps after ``step``,
    a final evaluation, a torn last line), as the ``jsonl`` metric writer does when it opens;
    returns how many were dropped (the loop says so)."""
    return truncate_rows(run_dir / METRICS_FILE, step)


# -- the data a run recorded -------------------------------------------------------------------


def run_data(run: LoadedRun) -> str | None:
    """The data a run was trained on: None for the embedded corpus, else its path (which must
    still be there). Checkpoints of older versions record it only in the run's run.json."""
    record = run.data
    if not record:
        old = read_record(run.checkpoint.parent.parent) if run.checkpoint.parent.name == "checkpoints" else None
        if old is None:
            raise InputError(f"checkpoint {run.checkpoint} does not record its training data; give --data")
        record = {"data": old.data}
    path = record.get("data")
    if path is not None and path.startswith(EMBEDDED_PREFIX):
        return path  # an embedded corpus by name: its fingerprint is checked when it is read
    if path is not None and not Path(path).exists():
        raise InputError(f"the run was trained on {path}, which is not on this machine; give --data")
    if path is not None:
        check_recorded(Path(path), record.get("fingerprint") or {})
    return path


#: Entries a run's recorded data folder may hold beyond the files its fingerprint lists, before
#: ``aunet eval`` refuses to read it (a tampered meta.json could name ``/usr``).
EXTRA_ENTRIES = 10_000


def check_recorded(path: Path, fingerprint: dict[str, Any]) -> None:
    """A run's recorded data path, checked against its fingerprint before anything is read: a
    folder must hold no far larger tree than the files the run read (a bounded walk), a file
    must be one the fingerprint names. What a checkpoint records is not trusted to point
    anywhere: it is the checkpoint's own text."""
    files = [f for f in fingerprint.get("files", []) if isinstance(f, dict)]
    if fingerprint.get("embedded"):
        raise InputError(f"the checkpoint records data at {path} but an embedded corpus's fingerprint; give --data")
    if path.is_dir():
        limit = len(files) + EXTRA_ENTRIES
        seen = 0
        for _, dirs, names in os.walk(path):
            seen += len(dirs) + len(names)
            if seen > limit:
                raise InputError(
                    f"the run's recorded data folder {path} holds more than {limit:,} entries, far more "
                    f"than the {len(files):,} file(s) the run read; give --data to evaluate"
                )
        return
    if files and path.name not in {f.get("name") for f in files}:
        raise InputError(
            f"the run's recorded data {path} is not the file it read ({files[0].get('name')!r}); give "
            "--data to evaluate"
        )
