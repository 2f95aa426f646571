"""Interleaved timing: every configuration once per round, many rounds, medians."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Hashable, Mapping
from typing import Any


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


def interleaved_from_start(
    calls: Mapping[Hashable, Callable[[Callable[[], None]], Any]], *, rounds: int, warmup: int = 1
) -> dict[Hashable, list[float]]:
    """``interleaved`` for calls timed from the ``start()`` they are handed (``timed_from_start``):
    seconds per call of each, measured round-robin after ``warmup`` untimed rounds."""
    for _ in range(warmup):
        for call in calls.values():
            call(lambda: None)
    times: dict[Hashable, list[float]] = {key: [] for key in calls}
    for _ in range(rounds):
        for key, call in calls.items():
            times[key].append(timed_from_start(call)[1])
    return times


def timed_from_start(
    call: Callable[[Callable[[], None]], Any],
    on_start: Callable[[], None] | None = None,
    *,
    clock: Callable[[], float] | None = None,
) -> tuple[Any, float]:
    """What ``call(start)`` returns and its wall seconds from ``start()``, which it calls once,
    when the part to time begins (a decode: once its prompts are prefilled, so that the time is
    the steps' alone and a prefill's noise stays out of it). ``on_start()``, if given, runs
    first (a profiler's start). ``clock``: seconds, ``time.perf_counter`` unless given."""
    clock = clock or time.perf_counter
    began: list[float] = []

    def start() -> None:
        if on_start is not None:
            on_start()
        began.append(clock())

    result = call(start)
    if not began:
        raise RuntimeError("the call ended before the part to time began: nothing to time")
    return result, clock() - began[0]
