"""Counting host synchronisations: calls that make the host wait for a tensor's value.

On CUDA a ``.item()``, ``bool(t)``, ``int(t)``, ``.tolist()`` or ``nonzero`` (and boolean-mask
indexing, which needs ``nonzero``) blocks the host until the device has caught up, and a training
step with such calls can no longer queue work ahead. ``count_host_syncs()`` counts these calls
made by aunet's own code (not by torch's internals) while it is active, on any device: the test
suite holds a training step to zero of them on a CPU, and on CUDA the same steps also run under
``torch.cuda.set_sync_debug_mode("error")``. ``python -m benchmarks train-step`` reports the count
per step.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)
#: Tensor operations whose result is a host value (or whose output shape depends on the data).
SYNCING = frozenset(
    {
        "__bool__",
        "__int__",
        "__float__",
        "__index__",
        "item",
        "tolist",
        "numpy",
        "nonzero",
        "argwhere",
        "masked_select",
        "unique",
        "unique_consecutive",
    }
)
_TORCH_ROOT = str(Path(torch.__file__).resolve().parent)


class HostSyncCounter(TorchFunctionMode):
    """A torch function mode that counts syncing calls by their call site (``file:line op``)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        name = getattr(func, "__name__", "")
        syncing = name in SYNCING or (name == "__getitem__" and _bool_index(args))
        if syncing:
            site = _caller()
            if site is not None:
                self.calls[f"{site} {name}"] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.calls.values())


def _bool_index(args: tuple) -> bool:
    index = args[1] if len(args) > 1 else None
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)


def _caller() -> str | None:
    """``file:line`` of the aunet code that made the call, or None if torch itself made it."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith(_TORCH_ROOT):
        if not frame.f_code.co_filename.endswith(("overrides.py", "_tensor.py", "functional.py")):
            return None  # a call torch's own code makes (an optimizer's step counter)
        frame = frame.f_back
    if frame is None:
        return None
    filename = frame.f_code.co_filename
    if not filename.startswith(PACKAGE_ROOT) or filename.endswith("syncs.py"):
        return None
    return f"{Path(filename).relative_to(PACKAGE_ROOT)}:{frame.f_lineno}"


def count_host_syncs() -> HostSyncCounter:
    """``with count_host_syncs() as syncs: ...``; then ``syncs.total`` and ``syncs.calls``."""
    return HostSyncCounter()
