"""What a run shows and records: the progress line on stderr, ``metrics.jsonl`` and TensorBoard.

Values come from the device only at logging steps (``[train.metrics] every``): a CUDA run
synchronises with the host there and nowhere else in the loop.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import IO, Any

from aunet.core.errors import InputError
from aunet.core.spec import MetricsSpec

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
    """``metrics.jsonl`` (one JSON object per record) and, if asked, TensorBoard scalars under
    ``tb/``. A context manager: the event files are closed once, whatever ends the run."""

    def __init__(
        self, run_dir: Path, config: MetricsSpec, *, purge_step: int | None = None, enabled: bool = True
    ) -> None:
        """``purge_step``: a resumed run's first step; TensorBoard hides what earlier event files
        logged from there on (the steps this run does again). ``enabled``: False on every process
        of a distributed run but the first (which alone writes)."""
        self.config = config
        self.path = run_dir / METRICS_FILE
        self.enabled = enabled
        self._writer: Any = None
        if config.tensorboard and enabled:
            from torch.utils.tensorboard import SummaryWriter

            tb = run_dir / "tb"
            if tb.exists() and not tb.is_dir():
                raise InputError(
                    f"{tb} is a file; TensorBoard writes a folder there: remove it, or set "
                    "train.metrics.tensorboard = false"
                )
            self._writer = SummaryWriter(str(tb), purge_step=purge_step)

    def due(self, step: int) -> bool:
        """Whether ``step`` is a logging step (the first step always is)."""
        return step % self.config.every == 0 or step == 1

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as exc:
            from aunet.jobs.runtime.files import advice

            raise InputError(
                f"cannot write {self.path}: {exc.strerror or exc}{advice(exc, self.path.parent)}"
            ) from None

    def scalars(self, step: int, values: dict[str, float | None]) -> None:
        if self._writer is None:
            return
        for key, value in values.items():
            if value is not None:
                self._writer.add_scalar(key, value, step)

    def __enter__(self) -> MetricWriters:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
