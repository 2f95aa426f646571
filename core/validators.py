"""Field validators of specs, and the sizes aunet accepts.

Every number in a spec is checked where it is read, with the field's path in the message: a
float must be finite and fit in float32 (``lr = 1e39`` would overflow every kernel), and a size
must be one a machine can allocate. The bounds below are far above any model that trains today
(a width of 2^20 means matrices of 4 TiB) but low enough that nothing downstream overflows, loops
for long or allocates without limit; whether a spec fits a particular machine's memory is checked
by the trainer against that machine (``aunet.jobs.runtime.devices.check_fits``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

FLOAT32_MAX = 3.4028234663852886e38
MAX_WIDTH = 1 << 20  # dim, head_dim, hidden widths
MAX_LAYERS = 4096
MAX_POSITIONS = 1 << 26  # context, windows, segments per row
MAX_ROWS = 1 << 20  # batch size, gradient accumulation
MAX_COUNT = 1 << 40  # steps, bytes, intervals
MAX_SEED = (1 << 63) - 1
MAX_LEVELS = 32  # pooling levels of a hierarchy
MAX_NGRAM = 64  # n-gram length of hash n-gram embeddings
MAX_BUCKETS = 1 << 24  # rows of one n-gram table

Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


def between(
    low: float | None = None, high: float | None = None, *, strict_low: bool = False, why: str = ""
) -> Validator:
    """``low <= value <= high`` (``low < value`` when ``strict_low``); None always passes."""
    note = f" ({why})" if why else ""

    def check(instance: object, attribute: attrs.Attribute, value: Any) -> None:
        if value is None:
            return
        if low is not None and (value <= low if strict_low else value < low):
            raise ValueError(
                f"must be > {_show(low)}, got {_show(value)}"
                if strict_low
                else f"must be at least {_show(low)}, got {_show(value)}"
            )
        if high is not None and value > high:
            raise ValueError(f"must be at most {_show(high)}{note}, got {_show(value)}")

    return check


def _show(value: float) -> str:
    if isinstance(value, int) and abs(value) >= 10_000:
        return f"{value:,}"
    return str(value)


positive = between(0, strict_low=True)
non_negative = between(0)
fraction = between(0.0, 1.0)
width = between(1, MAX_WIDTH, why="2^20; a matrix that wide would take terabytes")
layers = between(1, MAX_LAYERS)
positions = between(1, MAX_POSITIONS, why="2^26 positions")
rows = between(1, MAX_ROWS, why="2^20 rows")
count = between(1, MAX_COUNT)
seed = between(0, MAX_SEED, why="2^63 - 1")
