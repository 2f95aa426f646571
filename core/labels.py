"""Names for the profiler: ``encoder.<i>``, ``pool.<i>``, ``trunk``, ``upsample.<i>``,
``decoder.<i>``, ``head`` and ``loss`` in the assembler's walk (``backward`` and ``optimizer`` in
the trainer's step), as ``torch.profiler.record_function`` ranges.

Off unless a profiler asks (``aunet profile``, ``[train.profile]``): a range costs a few
microseconds, and inside ``torch.compile`` none is recorded (the compiled graph's own kernels
show instead).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

_enabled = False


def label(name: str) -> Any:
    """A ``record_function(name)`` range while labels are on, else nothing."""
    if not _enabled:
        return contextlib.nullcontext()
    import torch

    if torch.compiler.is_compiling():
        return contextlib.nullcontext()
    return torch.profiler.record_function(name)


@contextlib.contextmanager
def labelled() -> Iterator[None]:
    """Turn the labels on for a block (a profiled window of steps)."""
    global _enabled
    before, _enabled = _enabled, True
    try:
        yield
    finally:
        _enabled = before
