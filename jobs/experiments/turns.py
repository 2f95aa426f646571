"""Training several runs for the same budget, in turns.

On a shared machine the speed drifts (up to 2x within minutes here), so runs trained one after
the other are not compared fairly. ``train_in_turns`` trains every run a slice of steps at a
time, round after round (each slice resumes its run exactly, from its checkpoint), until each has
spent the same budget: its own training time (``minutes``), steps, or training FLOPs. Drift then
falls on all runs alike. The benchmarks' experiments and ``aunet compare`` use it.

Runs live in ``out/<name>``: a name must be a plain folder name (``run_name``), never a path, so
no run is written outside ``out``. Turns continue runs already in ``out`` (an interrupted round
carries on where it stopped), and a signal (Ctrl-C, SIGTERM, SIGHUP) stops the whole round after
the running turn's checkpoint: ``TurnsStopped`` says which signal, and the same call continues.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from aunet.core.errors import AunetError, InputError
from aunet.core.overrides import apply_overrides
from aunet.core.spec import Spec

#: Steps per turn.
SLICE_STEPS = 100
#: What a run's name may be: a folder name of letters, digits, '.', '_' and '-'.
RUN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,79}")


@attrs.frozen
class Turns:
    """What a round of turns did."""

    outs: dict[str, Path]  # run directory of each variant
    turns: dict[str, int]  # slices each variant took (in this call)


class TurnsStopped(AunetError):
    """A signal stopped the round; every run is at a checkpoint and the same call continues it."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum


#: What every run of a round of turns sets: no periodic evaluation, sample or final evaluation
#: (their time would fall on one run); the caller evaluates the finished runs.
QUIET = ("train.eval.every=1000000000000", "train.sample.bytes=0", "train.eval.final_bytes=1")


def run_name(name: str, what: str = "spec name") -> str:
    """``name`` if it can name a run's folder under ``out`` (no path, no '..'), else InputError."""
    if not RUN_NAME.fullmatch(name) or name in (".", ".."):
        raise InputError(
            f"{what} {name!r} cannot name a run's folder: use letters, digits, '.', '_' and '-' (at most "
            "80, not starting with '.' or '-'), never a path; set `name = \"...\"` in the spec"
        )
    return name


def _started(run_dir: Path) -> bool:
    return (run_dir / "spec.toml").is_file() or (run_dir / "checkpoints").is_dir()


def train_in_turns(
    variants: Mapping[str, Spec],
    *,
    data: str | Path | None,
    out: Path,
    minutes: float | None = None,
    steps: int | Mapping[str, int] | None = None,
    slice_steps: int = SLICE_STEPS,
    device: Any = "auto",
    on_turn: Callable[[str, Any], None] | None = None,
    quiet: bool = True,
    overrides: tuple[str, ...] = QUIET,
) -> Turns:
    """Train every variant for ``minutes`` of its own training time, or ``steps`` (one number, or
    one per variant: an equal FLOPs budget gives each its own), in turns of ``slice_steps``, with
    ``overrides`` on every spec (by default periodic evaluations and samples off). Runs already
    in ``out`` continue from their newest checkpoint; ``TurnsStopped`` when a signal stops a turn."""
    import io

    from aunet.jobs.runs import checkpoint
    from aunet.jobs.train.loop import train

    if (minutes is None) == (steps is None):
        raise ValueError("give minutes or steps")
    outs = {run_name(name): out / name for name in variants}
    done = {}
    for name, run_dir in outs.items():
        latest = checkpoint.latest_name(run_dir)
        done[name] = int(latest.split("-")[1]) if latest and _started(run_dir) else 0
    finished = dict.fromkeys(variants, False)
    turns = dict.fromkeys(variants, 0)
    while not all(finished.values()):
        for name, spec in variants.items():
            if finished[name]:
                continue
            first = not _started(outs[name])
            run_spec = apply_overrides(spec, list(overrides)) if first else None
            budget = steps[name] if isinstance(steps, Mapping) else steps
            summary = train(
                run_spec,
                data=data if first else None,
                out=outs[name],
                minutes=minutes,
                steps=budget,
                resume=not first,
                stop_at=done[name] + slice_steps,
                device=device,
                stream=io.StringIO() if quiet else None,
            )
            turns[name] += 1
            done[name] = summary.step
            finished[name] = not summary.interrupted
            if on_turn is not None:
                on_turn(name, summary)
            if summary.signal:
                import signal

                raise TurnsStopped(
                    summary.signal,
                    f"stopped by {signal.Signals(summary.signal).name}: {name} is at "
                    f"step {summary.step}, every run at a checkpoint",
                )
    return Turns(outs, turns)
