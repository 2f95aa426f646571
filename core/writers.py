"""The metric writer interfaces: where a training run's figures go (``metrics.jsonl``,
TensorBoard, MLflow, Weights & Biases, or a plugin's own place).

A writer is two objects, like every pluggable family: its spec, a small frozen attrs class whose
fields are its options (``[train.metrics] writers = [{ kind = "mlflow", experiment = "x" }]``) and
whose class constant ``kind`` names it; and the ``MetricWriter`` that ``spec.open(run)`` returns for
one invocation of a run. Only the main process of a run opens writers (the others of a distributed
run never do), so a writer never needs to know about processes.

What the trainer calls, in order::

    writer = spec.open(run)            # run.resume_step: None for a new run, else the checkpoint's step
    writer.write(step, {"train/loss": 2.31, "train/bpb": 3.33, ...})   # every logging step
    writer.write_row({"step": step, "loss": 2.31, ...})                 # the same event, as one row
    writer.flush()                     # a checkpoint was saved
    writer.close()                     # the run ends: normally, on an error, or on a signal

Torch-free and library-free on import: a writer imports its library in ``open`` (and says in
``unavailable`` that it is missing, without importing it).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import attrs

from aunet.core.components import ComponentSpec


@attrs.frozen(kw_only=True)
class MetricRun:
    """What a metric writer is opened for: one invocation of a run."""

    directory: Path
    """The run directory; a writer keeps everything it writes under it."""
    name: str = ""
    """The run's name for humans (its directory's name)."""
    resume_step: int | None = None
    """None for a new run. For a resumed one, the step of the checkpoint it resumes from: the
    steps after it are trained (and written) again, so a writer drops, hides or rewinds what an
    earlier invocation recorded after this step, and keeps everything up to it."""
    config: Mapping[str, Any] = attrs.field(factory=dict)
    """The run's resolved spec as plain data (tables, lists, scalars), for writers that record a
    run's parameters; may be empty."""

    @property
    def resumed(self) -> bool:
        return self.resume_step is not None


class MetricWriter(ABC):
    """An open metric writer of one invocation of a run (what ``MetricWriterSpec.open`` returns).

    The contract:

    * ``write(step, metrics)`` records scalars by chart name (``train/loss``, ``val/bpb``,
      ``levels/dropped_1``) at a step. It is called at logging steps, evaluations and the end of a
      run, possibly several times for one step (each time with other names); the steps of one
      opening never decrease. Values are finite or not (a diverging loss is recorded), never None.
    * ``write_row(row)`` receives the same event as one JSON-ready row, the form of
      ``metrics.jsonl``: a ``step``, names without their section (``loss``, ``val_bpb``), lists per
      level, flags such as ``final``, None for a figure unknown on this device. A writer of rows
      implements it and may ignore ``write``; the default ignores rows.
    * ``flush()`` makes what was written so far durable: it is called when a checkpoint is saved,
      so that a resumed run finds every record up to its checkpoint. The default does nothing.
    * ``close()`` flushes and releases everything. It is called once however the run ends
      (normally, on an error, on a signal) and must be idempotent: a second call does nothing.
      Nothing is written after it.
    * Resuming: opened with ``run.resume_step = s``, a writer keeps what earlier invocations
      recorded up to step ``s`` and drops (or hides, or rewinds) what they recorded after it, so
      that each step reads back once. ``aunet.testing.check_metric_writer`` checks all of this.

    A failed write may raise ``OSError`` (the trainer reports it as one line with advice) or an
    ``aunet.core.errors.AunetError`` that says what to do.
    """

    @abstractmethod
    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        """Record the scalars ``metrics`` (chart name to value) at ``step``."""

    def write_row(self, row: Mapping[str, Any]) -> None:
        """Record one whole row (``metrics.jsonl``'s form); the default ignores it."""

    def flush(self) -> None:
        """Make what was written so far durable; the default does nothing."""

    @abstractmethod
    def close(self) -> None:
        """Flush and release everything; idempotent."""

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@attrs.frozen(kw_only=True)
class MetricWriterSpec(ComponentSpec):
    """A metric writer's options, and how to open it for a run."""

    #: Top-level modules the writer imports when it opens (checked without importing them).
    requires: ClassVar[tuple[str, ...]] = ()
    #: The extra of aunet that installs them (``pip install 'aunet[EXTRA]'``), for the message.
    extra: ClassVar[str | None] = None

    @abstractmethod
    def open(self, run: MetricRun) -> MetricWriter:
        """The writer for one invocation of ``run`` (on the main process only). Import the
        writer's library here, not at module level: listing plugins or reading a spec must not."""

    def unavailable(self) -> str | None:
        """Why this writer cannot open in this environment (a library it needs is not installed,
        and how to install it), or None. Checked on every process before training starts, so it
        must not import the library: the default looks for ``requires`` with
        ``importlib.util.find_spec``, which does not."""
        missing = [name for name in self.requires if not _installed(name)]
        if not missing:
            return None
        if self.extra:
            return f"the '{self.kind}' writer needs the {self.extra} extra: pip install 'aunet[{self.extra}]'"
        return f"the '{self.kind}' writer needs {', '.join(missing)}, which is not installed"

    def read(self, directory: Path) -> dict[str, list[tuple[int, float]]]:
        """What this writer recorded in a run directory, read back with its library's own reader
        (after the library's own resume semantics: TensorBoard's purge, W&B's rewind): each name's
        ``(step, value)`` pairs in the order the reader gives them. For tests and tools
        (``aunet.testing.check_metric_writer`` uses it); a writer that cannot read its own records
        back raises NotImplementedError (the default), and the kit then needs a ``read=``."""
        raise NotImplementedError(f"metric writer '{self.kind}' cannot read back what it wrote")


def _installed(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken parent package; a module without a spec
        return False


def distinct_kinds(_: Any, attribute: Any, value: Any) -> None:
    """attrs validator: each writer kind once in a list of writers."""
    seen: set[str] = set()
    for spec in value:
        kind = getattr(spec, "kind", None)
        if kind in seen:
            raise ValueError(f"names the '{kind}' writer twice; name each writer once")
        seen.add(kind)
