"""Devices, precision, threads and random states: what a job needs to run the same anywhere.

``resolve_device("auto")`` takes CUDA when present (then MPS), else the CPU; asking for a device
this machine does not have is one clear error. Autocast follows the model's device type.

Threads. PyTorch's CPU default is one thread per physical core. On a machine whose cores are
shared, a parallel op waits for its slowest thread, and small matrices (a decoding step multiplies
one position per row) gain nothing from a second thread. The command line therefore sets
``OMP_WAIT_POLICY=PASSIVE`` before torch loads (idle threads sleep instead of spinning) and
applies ``--threads`` once, for the whole process (it owns it); library calls never change the
process-wide setting unless they are asked to (``threads=`` of ``aunet.generate``), and then
restore it.

Random states are saved as plain data (tensors for safetensors, numbers for JSON), never pickled,
so that a checkpoint loads without executing anything.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
from collections.abc import Iterator
from typing import Any

import numpy as np

from aunet.core.errors import InputError

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"
#: Rows up to which a decoding step runs on one CPU thread (``default_decode_threads``).
STEP_ROWS_PER_THREAD = 8


def resolve_device(name: str | Any | None = "auto") -> Any:
    """A ``torch.device`` for ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; InputError if
    this machine has no such device."""
    import torch

    if isinstance(name, torch.device):
        name = str(name)
    text = (name or "auto").strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise InputError(f"--device: '{name}' is not a device; use {DEVICE_CHOICES}") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = (
                "this torch was built without CUDA"
                if torch.version.cuda is None
                else "no CUDA device is visible (CUDA_VISIBLE_DEVICES, driver)"
            )
            raise InputError(f"--device {text}: {why}; use --device cpu (or auto)")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise InputError(
                f"--device {text}: this machine has {count} CUDA device{'s' if count != 1 else ''} "
                f"(cuda:0..cuda:{count - 1})"
            )
        return device if device.index is not None else torch.device("cuda", torch.cuda.current_device())
    if device.type == "mps":
        if not _mps_available():
            raise InputError("--device mps: this machine has no Apple MPS device; use --device cpu (or auto)")
        return device
    raise InputError(f"--device: '{name}' is not supported; use {DEVICE_CHOICES}")


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def autocast(device: Any, *, bfloat16: bool) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on the device's own type (matrix products in bf16, weights in fp32)."""
    import torch

    if not bfloat16:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def model_autocast(model: Any) -> contextlib.AbstractContextManager:
    """Run a trained model as it trained: bf16 autocast where its spec's precision meant it on
    the device it is on now (what evaluation, the harness and the suites use)."""
    device = next(model.parameters()).device
    return autocast(device, bfloat16=use_bfloat16(model.spec.train.precision, device))


def use_bfloat16(precision: Any, device: Any) -> bool:
    """Whether a spec's ``train.precision`` means bf16 autocast on ``device`` (``auto``: on CUDA)."""
    from aunet.core.spec import Precision

    if precision is Precision.AUTO:
        return device.type == "cuda"
    return precision is Precision.BFLOAT16


# -- memory ------------------------------------------------------------------------------------


def host_memory_available() -> int | None:
    """Bytes of host memory available now (``MemAvailable`` of /proc/meminfo), or None where
    there is no such file (not Linux) or it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            lines = meminfo.read().splitlines()
        for line in lines:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def available_memory(device: Any) -> int | None:
    """Bytes free for a model on ``device`` now (None when unknown, as on MPS)."""
    import torch

    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "cpu":
        return host_memory_available()
    return None


def check_fits(spec: Any, device: Any) -> None:
    """InputError when training ``spec`` on ``device`` cannot fit in the memory free there, by
    the accounting's estimate (``aunet.core.accounting.MemoryEstimate``) at the run's precision
    and activation checkpointing, for one micro-batch of ``train.batch_size`` rows."""
    from aunet.core.accounting import account
    from aunet.core.spec import Precision

    precision = Precision.BFLOAT16 if use_bfloat16(spec.train.precision, device) else Precision.FLOAT32
    estimate = account(spec).memory_for(precision, spec.train.activation_checkpointing)
    state = estimate.state_bytes
    activations = int(estimate.activation_bytes_per_row * spec.train.batch_size)
    have = available_memory(device)
    if have is not None and state + activations > have:
        gib = 2**30
        raise InputError(
            f"training this spec needs at least {(state + activations) / gib:,.1f} GiB (weights, gradients "
            f"and AdamW state {state / gib:,.1f} GiB; activations of one micro-batch "
            f"{activations / gib:,.1f} GiB), more than the {have / gib:,.1f} GiB free on {device}; use a "
            "smaller model, or a smaller train.batch_size with train.grad_accum"
        )


# -- threads -----------------------------------------------------------------------------------


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (containers)."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        count = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max", encoding="ascii") as limits:
            quota, period = limits.read().split()[:2]
        if quota != "max":
            count = min(count, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return count


def parse_threads(text: str) -> int | None:
    """``--threads``: ``auto`` (None) or N >= 1."""
    if text.strip().lower() == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        raise InputError(f"--threads: expected a whole number or 'auto', got '{text}'") from None
    if value < 1:
        raise InputError(f"--threads: must be at least 1, got {value}")
    most = max_threads()
    if value > most:
        raise InputError(
            f"--threads: at most {most} on this machine ({os.cpu_count() or 1} CPUs; more threads "
            f"than {MAX_THREADS_PER_CPU} per CPU only wait for each other), got {value}"
        )
    return value


#: ``--threads`` may ask for up to this many threads per CPU of the machine (OpenMP crashes
#: when asked for tens of thousands).
MAX_THREADS_PER_CPU = 4


def max_threads() -> int:
    return MAX_THREADS_PER_CPU * (os.cpu_count() or 1)


def set_process_threads(threads: int | None) -> int:
    """Apply ``--threads`` to the whole process (the command line owns it); returns the count.
    ``auto`` (None) is torch's default (one per physical core) capped by the CPUs this process
    may use, so that a container or a ``taskset`` never gets more threads than cores."""
    import torch

    if threads is None:
        threads = min(torch.get_num_threads(), available_cpus())
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def default_decode_threads(rows: int, device: Any) -> int | None:
    """Threads for the decoding steps of ``rows`` rows on ``device``: one on a CPU for a few
    rows (waking a second thread costs more than it saves on one position per row: 100 us against
    25 us for a 320x960 matrix on this project's CI machine), else None (leave it)."""
    return 1 if device.type == "cpu" and rows <= STEP_ROWS_PER_THREAD else None


@contextlib.contextmanager
def threads(count: int | None) -> Iterator[None]:
    """Run a block with ``count`` torch threads (None: as they are), restoring them after."""
    import torch

    if count is None or count == torch.get_num_threads():
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# -- random states -----------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """Every random generator this process uses, as JSON-able numbers: torch's CPU generator and
    every CUDA device's (their bytes), Python's ``random`` and numpy's legacy global generator."""
    import torch

    state: dict[str, Any] = {"torch": torch.get_rng_state().tolist()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state["python"] = [version, list(internal), gauss]
    state["numpy"] = [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]
    return state


def set_rng_state(state: dict[str, Any]) -> list[str]:
    """Restore what ``rng_state`` saved; returns notices for what this machine cannot restore
    (CUDA states written on a machine with more CUDA devices, or with CUDA where there is none)."""
    import torch

    notices = []
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    cuda = state.get("cuda") or []
    if cuda:
        here = torch.cuda.device_count() if torch.cuda.is_available() else 0
        for i, saved in enumerate(cuda[:here]):
            torch.cuda.set_rng_state(torch.tensor(saved, dtype=torch.uint8), i)
        if len(cuda) > here:
            notices.append(
                f"the checkpoint holds the CUDA random state of {len(cuda)} device(s) and this machine has "
                f"{here}; the others are not restored (initialization and data order are unaffected)"
            )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    return notices


# -- memory and throughput figures of a run ------------------------------------------------------


def peak_host_memory() -> int | None:
    """This process's peak resident memory in bytes (``VmHWM``; ``ru_maxrss`` elsewhere)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024
    except (ImportError, OSError):  # pragma: no cover - not POSIX
        return None


def peak_device_memory(device: Any) -> int | None:
    """Peak bytes allocated by torch on a CUDA device (None elsewhere: the host figure covers it)."""
    import torch

    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return None


def trim_host_memory() -> None:
    """Give freed memory back to the system (glibc's ``malloc_trim``; nothing elsewhere).

    Training allocates activations of a different size every step (eager shapes follow each
    batch's segments), and glibc keeps freed blocks of the heap for reuse, fragmented: without
    this, the default run's resident memory grew from 0.5 GB to 2.5 GB over its 3,000 steps while
    the memory in use stayed flat (measured: trimming every 10 steps keeps it at 430 MB)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Any:
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


@functools.cache
def matmul_peak(device_type: str, index: int | None, bfloat16: bool) -> float:
    """FLOP/s of this device on a plain square matrix product in the run's precision, measured
    once per process (about 0.1 s): the "peak" a run's model FLOPs utilisation is a share of. A
    measured figure, not a datasheet's: what this machine gives a dense matmul now."""
    import time

    import torch

    device = torch.device(device_type, index) if index is not None else torch.device(device_type)
    n = 2048 if device.type == "cuda" else 512
    dtype = torch.bfloat16 if bfloat16 else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):  # warm up (kernels chosen, caches filled)
        a @ b
    best = float("inf")
    for _ in range(3):
        _sync(device)
        started = time.perf_counter()
        for _ in range(8):
            a @ b
        _sync(device)
        best = min(best, (time.perf_counter() - started) / 8)
    return 2.0 * n**3 / best


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
