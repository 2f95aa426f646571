"""Interleaved timing: every configuration once per round, many rounds, medians."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping


def interleaved(configs: Mapping[str, Callable[[], object]], *, rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each configuration, measured round-robin so drift hits all alike."""
    for _ in range(warmup):
        for fn in configs.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(rounds):
        for name, fn in configs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)
