"""How a run ended (``RunSummary``), what its training steps cost (``Throughput``), and how the
command line shows durations and memory."""

from __future__ import annotations

from pathlib import Path

import attrs


@attrs.frozen
class Throughput:
    """What an invocation's training steps cost: time, bytes, model FLOPs, memory."""

    steps: int  # steps this invocation trained
    seconds: float  # their training time (evaluations and checkpoints excluded)
    bytes: int  # bytes they read
    flops_per_byte: float  # the paper's accounting (``aunet spec show``), forward and backward
    peak_flops: float  # this device's measured dense matmul FLOP/s in the run's precision
    peak_host_memory: int | None  # this process's peak resident memory, bytes
    peak_device_memory: int | None = None  # peak bytes allocated on a CUDA device

    @property
    def bytes_per_s(self) -> float:
        return self.bytes / self.seconds if self.seconds > 0 else 0.0

    @property
    def flops_per_s(self) -> float:
        return self.flops_per_byte * self.bytes_per_s

    @property
    def mfu(self) -> float:
        """Model FLOPs utilisation: the model's FLOP/s as a share of the measured matmul peak."""
        return self.flops_per_s / self.peak_flops if self.peak_flops > 0 else 0.0


@attrs.frozen
class RunSummary:
    """How a run ended."""

    run_dir: Path
    step: int
    interrupted: bool
    losses: tuple[float, ...]  # training loss (nats per position) of every step of this invocation
    val_bpb: float | None
    xz_bpb: float | None
    val_bytes: int
    sample: bytes | None
    checkpoint: Path | None
    signal: int | None = None  # the signal that stopped it (SIGINT, SIGTERM, SIGHUP), if one did
    throughput: Throughput | None = None
    train_bpb: float | None = None  # the last step's training loss in bits per byte
    val_whole: bool = True  # the final evaluation covered the whole validation split
    prompt: bytes = b""  # the sample's prompt


def duration(seconds: float) -> str:
    """``120 ms``, ``12.3 s``, ``4.5 minutes``, ``2.1 hours``."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 90:
        return f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} minutes"
    return f"{seconds / 3600:.1f} hours"


def memory_text(n_bytes: int | None) -> str:
    return "unknown" if n_bytes is None else f"{n_bytes / 2**20:,.0f} MiB"
