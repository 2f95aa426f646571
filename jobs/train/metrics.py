"""What a run shows and records: the progress line on stderr, and the metric writers
(``metrics.jsonl``, TensorBoard and those ``[train.metrics] writers`` names: ``aunet.core.writers``).

Values come from the device only at logging steps (``[train.metrics] every``): a CUDA run
synchronises with the host there and nowhere else in the loop.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeVar

from aunet.core.convert import spec_to_dict
from aunet.core.errors import InputError
from aunet.core.registry import Family, Registry, default_registry
from aunet.core.spec import Spec
from aunet.core.writers import MetricRun, MetricWriter, MetricWriterSpec
from aunet.jobs.config import MetricsSpec

T = TypeVar("T")

METRICS_FILE = "metrics.jsonl"


class Progress:
    """A live status line on a terminal (refreshed every step); a line per logged step otherwise."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.live = hasattr(stream, "isatty") and stream.isatty()
        self._last = ""

    def update(
        self,
        step: int,
        total: int | None,
        loss: float | None,
        bytes_per_s: float | None,
        eta_s: float | None,
        *,
        logged: bool,
        bytes_per_position: float = 1.0,
        mfu: float | None = None,
        memory: int | None = None,
    ) -> None:
        """Step ``step`` is done; ``loss`` (per position: per token for BPE, whose positions
        cover ``bytes_per_position`` bytes), ``bytes_per_s`` and ``mfu`` (model FLOPs utilisation)
        are the latest read back; ``memory`` the process's peak resident bytes."""
        if not (self.live or logged):
            return
        where = f"{step}/{total}" if total else f"{step}"
        bpb = loss / math.log(2) / bytes_per_position if loss is not None else None
        figures = f"  loss {loss:.4f}  bpb {bpb:.3f}" if loss is not None else ""
        speed = f"  {bytes_per_s / 1000:.1f} kB/s" if bytes_per_s else ""
        utilisation = f"  MFU {100 * mfu:.1f}%" if mfu is not None and bytes_per_s else ""
        peak = f"  peak {memory / 2**20:,.0f} MiB" if memory else ""
        eta = f"  ETA {int(eta_s // 60)}:{int(eta_s % 60):02d}" if eta_s is not None else ""
        line = f"step {where}{figures}{speed}{utilisation}{peak}{eta}"
        if self.live:
            self.stream.write("\r" + line + "\x1b[K")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def bar(self, what: str, done: int, total: int | None, n_bytes: int, seconds: float) -> None:
        """A progress bar on a terminal (``done`` of ``total`` units, ``n_bytes`` so far; without a
        total, a stream's count)."""
        rate = n_bytes / seconds if seconds > 0 else 0.0
        if total is None:
            self.stream.write(f"\r{what}: {done} batches, {n_bytes:,} bytes  {rate / 1000:.1f} kB/s\x1b[K")
        else:
            width = 24
            filled = int(width * done / max(total, 1))
            eta = (total - done) * seconds / done if done else 0.0
            self.stream.write(
                f"\r{what} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}  "
                f"{rate / 1000:.1f} kB/s  ETA {int(eta // 60)}:{int(eta % 60):02d}\x1b[K"
            )
        self.stream.flush()

    def clear(self) -> None:
        self.stream.write("\r\x1b[K")
        self.stream.flush()

    def message(self, text: str) -> None:
        if self.live:
            self.stream.write("\r\x1b[K")
        self.stream.write(text + "\n")
        self.stream.flush()


class MetricWriters:
    """The run's metric writers (``aunet.core.writers``): ``metrics.jsonl`` always, TensorBoard
    under ``tb/`` unless ``tensorboard = false``, and those ``writers`` names, in that order. A
    context manager: every writer is closed once, whatever ends the run."""

    def __init__(
        self,
        run_dir: Path,
        config: MetricsSpec,
        *,
        purge_step: int | None = None,
        enabled: bool = True,
        spec: Spec | None = None,
        registry: Registry | None = None,
    ) -> None:
        """``purge_step``: a resumed run's first step (the step after its checkpoint's); the
        writers drop or hide what earlier invocations recorded from there on. ``enabled``: False
        on every process of a distributed run but the first (which alone opens writers).
        ``spec``: the run's resolved spec, for writers that record a run's parameters."""
        self.config = config
        self.path = run_dir / METRICS_FILE
        self.run_dir = run_dir
        self.enabled = enabled
        self._open: list[MetricWriter] = []
        specs = writer_specs(config, registry)
        check_available(specs)
        if not enabled:
            return
        run = MetricRun(
            directory=run_dir,
            name=run_dir.resolve().name,
            resume_step=None if purge_step is None else purge_step - 1,
            config=spec_to_dict(spec, registry=registry) if spec is not None else {},
        )
        try:
            for writer in specs:
                self._open.append(self._guarded(lambda: writer.open(run)))
        except BaseException:
            with contextlib.suppress(Exception):  # the failure to open stays the one reported
                self.close()
            raise

    def due(self, step: int) -> bool:
        """Whether ``step`` is a logging step (the first step always is)."""
        return step % self.config.every == 0 or step == 1

    def write(self, record: dict[str, Any]) -> None:
        """One event as a row (``metrics.jsonl``'s form) for the writers of rows."""
        for writer in self._open:
            self._guarded(lambda: writer.write_row(record))

    def scalars(self, step: int, values: dict[str, float | None]) -> None:
        """The event's scalars by chart name (None: unknown here, left out)."""
        known = {key: value for key, value in values.items() if value is not None}
        if known:
            for writer in self._open:
                self._guarded(lambda: writer.write(step, known))

    def flush(self) -> None:
        """A checkpoint was saved: what was written up to it is made durable."""
        for writer in self._open:
            self._guarded(writer.flush)

    def close(self) -> None:
        """Close every writer (each once, the others even if one fails); the first failure is
        raised after."""
        failure: BaseException | None = None
        while self._open:
            writer = self._open.pop(0)
            try:
                self._guarded(writer.close)
            except BaseException as exc:  # noqa: BLE001 - raised below, once the others are closed
                failure = failure or exc
        if failure is not None:
            raise failure

    def _guarded(self, call: Callable[[], T]) -> T:
        """A writer's call, its OSError as one line of advice (a full disk, a read-only folder)."""
        try:
            return call()
        except OSError as exc:
            from aunet.jobs.runtime.files import advice

            where = Path(exc.filename) if isinstance(exc.filename, (str, os.PathLike)) else self.run_dir
            folder = where.parent if exc.filename else where
            raise InputError(f"cannot write {where}: {exc.strerror or exc}{advice(exc, folder)}") from None

    def __enter__(self) -> MetricWriters:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        try:
            self.close()
        except Exception:
            if kind is None:  # an error on its way out stays the one reported
                raise


def writer_specs(config: MetricsSpec, registry: Registry | None = None) -> list[MetricWriterSpec]:
    """The writers of ``[train.metrics]``: ``jsonl`` (always), ``tensorboard`` if ``tensorboard``
    (unless ``writers`` names it, with its own options), then ``writers`` in order."""
    registry = registry or default_registry()
    named = {writer.kind for writer in config.writers}
    out = [registry.lookup(Family.METRIC_WRITER, "jsonl").cls()]
    if config.tensorboard and "tensorboard" not in named:
        out.append(registry.lookup(Family.METRIC_WRITER, "tensorboard").cls())
    return out + [writer for writer in config.writers if writer.kind != "jsonl"]


def check_available(specs: MetricsSpec | list[MetricWriterSpec]) -> None:
    """Every writer can open here (its library is installed), or InputError saying what to
    install. Checked on every process before training starts, without importing any library."""
    if isinstance(specs, MetricsSpec):
        specs = writer_specs(specs)
    problems = [f"train.metrics.writers: {reason}" for spec in specs if (reason := spec.unavailable())]
    if problems:
        raise InputError("\n".join(problems))
