"""Training several runs for the same budget, in turns.

On a shared machine the speed drifts (up to 2x within minutes here), so runs trained one after
the other are not compared fairly. ``train_in_turns`` trains every run a slice of steps at a
time, round after round (each slice resumes its run exactly, from its checkpoint), until each has
spent the same budget: its own training time (``minutes``), steps, or training FLOPs. Drift then
falls on all runs alike. The benchmarks' experiments and ``aunet compare`` use it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from aunet.core.spec import Spec, apply_overrides

#: Steps per turn.
SLICE_STEPS = 100


@attrs.frozen
class Turns:
    """What a round of turns did."""

    outs: dict[str, Path]  # run directory of each variant
    turns: dict[str, int]  # slices each variant took


#: What every run of a round of turns sets: no periodic evaluation, sample or final evaluation
#: (their time would fall on one run); the caller evaluates the finished runs.
QUIET = ("train.eval.every=1000000000000", "train.sample.bytes=0", "train.eval.final_bytes=1")


def train_in_turns(variants: Mapping[str, Spec], *, data: str | Path | None, out: Path, minutes: float | None = None,
                   steps: int | Mapping[str, int] | None = None, slice_steps: int = SLICE_STEPS, device: Any = "auto",
                   on_turn: Callable[[str, Any], None] | None = None, quiet: bool = True,
                   overrides: tuple[str, ...] = QUIET) -> Turns:  # fmt: skip
    """Train every variant for ``minutes`` of its own training time, or ``steps`` (one number, or
    one per variant: an equal FLOPs budget gives each its own), in turns of ``slice_steps``, with
    ``overrides`` on every spec (by default periodic evaluations and samples off)."""
    import io

    from aunet.jobs.train import train

    if (minutes is None) == (steps is None):
        raise ValueError("give minutes or steps")
    outs = {name: out / name for name in variants}
    done = dict.fromkeys(variants, 0)
    finished = dict.fromkeys(variants, False)
    turns = dict.fromkeys(variants, 0)
    while not all(finished.values()):
        for name, spec in variants.items():
            if finished[name]:
                continue
            first = turns[name] == 0
            run_spec = apply_overrides(spec, list(overrides)) if first else None
            budget = steps[name] if isinstance(steps, Mapping) else steps
            summary = train(run_spec, data=data if first else None, out=outs[name], minutes=minutes, steps=budget,
                            resume=not first, stop_at=done[name] + slice_steps, device=device,
                            stream=io.StringIO() if quiet else None)  # fmt: skip
            turns[name] += 1
            done[name] = summary.step
            finished[name] = not summary.interrupted
            if on_turn is not None:
                on_turn(name, summary)
    return Turns(outs, turns)
