"""The conformance kit of metric writers: ``check_metric_writer``.

It drives a writer as the trainer does (``aunet.core.writers``): a new run's events, a checkpoint's
flush, an ending (``close``, twice), then a resumed invocation from an earlier step that writes the
later steps again with other values, and reads everything back with the writer's own reader. Each
failure is an AssertionError that names the writer and the invariant it broke. No hypothesis: a
writer's contract is about files and calls, not about inputs.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from aunet.testing.kits import _invariant

#: The events the kit writes: each figure's name in a row and as a scalar, and the steps it is
#: written at (``None``: every step), as the trainer's training and evaluation figures are.
FIGURES = (("loss", "train/loss", None), ("bpb", "train/bpb", None), ("val_bpb", "val/bpb", 2))

Reader = Callable[[Path], Mapping[str, list[tuple[int, float]]]]


def _value(invocation: int, step: int, figure: int) -> float:
    """A value that tells which invocation wrote it, exact in float32 (TensorBoard's type)."""
    return 1000.0 * invocation + step + 0.25 * figure


def _events(writer: Any, invocation: int, steps: range) -> None:
    for step in steps:
        row: dict[str, Any] = {"step": step}
        for i, (name, chart, every) in enumerate(FIGURES):
            if every is None or step % every == 0:
                row[name] = _value(invocation, step, i)
        writer.write_row(row)
        training = {chart: row[name] for name, chart, every in FIGURES if every is None}
        writer.write(step, training)  # the training figures, then the evaluation's: two calls, one step
        evaluated = {chart: row[name] for name, chart, every in FIGURES if every is not None and name in row}
        if evaluated:
            writer.write(step, evaluated)


def _expected(last: int, resume_step: int | None = None, resumed_to: int | None = None) -> dict[int, dict[int, float]]:
    """Figure index to {step: value} after a first invocation of steps 1..last and, if resumed,
    a second of steps resume_step + 1 .. resumed_to."""
    out: dict[int, dict[int, float]] = {}
    for i, (_, _, every) in enumerate(FIGURES):
        steps = {s: _value(1, s, i) for s in range(1, last + 1) if every is None or s % every == 0}
        if resume_step is not None and resumed_to is not None:
            steps = {s: v for s, v in steps.items() if s <= resume_step}
            steps |= {
                s: _value(2, s, i) for s in range(resume_step + 1, resumed_to + 1) if every is None or s % every == 0
            }
        out[i] = steps
    return out


def _compare(read: Mapping[str, list[tuple[int, float]]], expected: dict[int, dict[int, float]]) -> None:
    by_name = {name: i for i, (row, chart, _) in enumerate(FIGURES) for name in (row, chart)}
    known = {name: pairs for name, pairs in read.items() if name in by_name}
    assert known, f"nothing read back under the names written ({', '.join(sorted(by_name))}); read {sorted(read)}"
    for name, pairs in known.items():
        steps = [step for step, _ in pairs]
        twice = sorted({step for step in steps if steps.count(step) > 1})
        assert not twice, f"'{name}' reads back step {twice[0]} twice: {pairs}"
        want = expected[by_name[name]]
        assert sorted(steps) == sorted(want), f"'{name}' reads back steps {steps}, not {sorted(want)}"
        for step, value in pairs:
            assert math.isclose(value, want[step], rel_tol=1e-6), (
                f"'{name}' at step {step} reads back {value}, not {want[step]}"
                + (" (an earlier invocation's value)" if math.isclose(value, want[step] - 1000.0, rel_tol=1e-6) else "")
                + (" (a later invocation's value)" if math.isclose(value, want[step] + 1000.0, rel_tol=1e-6) else "")
            )


def _again(call: Callable[[], Any], what: str) -> None:
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - reported as the invariant it breaks
        raise AssertionError(f"a second {what} raised {type(exc).__name__}: {exc}") from None


def check_metric_writer(
    writer: Any,
    *,
    read: Reader | None = None,
    steps: int = 6,
    resume_step: int = 3,
    directory: Path | None = None,
) -> None:
    """Check a metric writer against the contract of ``aunet.core.MetricWriter``.

    Quick start for a writer author::

        from aunet.testing import check_metric_writer
        check_metric_writer(MyWriterSpec())       # spec.read reads its records back
        check_metric_writer(lambda run: MyWriter(run.directory), read=my_reader)

    ``writer`` is a ``MetricWriterSpec`` (opened through its ``open``) or a factory taking a
    ``MetricRun`` and returning an open ``MetricWriter``; ``read(directory)`` returns each name's
    ``(step, value)`` pairs as the writer's library reads them back (default: the spec's own
    ``read``). In a fresh directory (or ``directory``) it checks: opening returns a
    ``MetricWriter``; a run's events (rows and scalars, two scalar calls for one step) read back,
    each step once with its value, after ``flush`` and ``close`` (each twice: both idempotent, as
    on the crash and signal paths); a second invocation resumed at ``resume_step`` that writes the
    steps after it again (and more) leaves each step once: the first invocation's values up to
    ``resume_step``, the second's after it; and for a spec, a distributed run's other processes
    (``MetricWriters`` with ``enabled=False``) write nothing at all.
    """
    from aunet.core.writers import MetricRun, MetricWriter, MetricWriterSpec

    is_spec = isinstance(writer, MetricWriterSpec)
    kind = getattr(writer, "kind", None) or getattr(writer, "__name__", None) or type(writer).__name__
    component = f"metric writer '{kind}'"
    if read is None:
        if not is_spec:
            raise TypeError(f"{component}: give read= (how to read its records back) with a factory")
        read = writer.read
    opener: Callable[[MetricRun], Any] = writer.open if is_spec else writer
    with tempfile.TemporaryDirectory(prefix="aunet-writer-kit-") as scratch:
        root = Path(directory) if directory is not None else Path(scratch)
        run_dir = root / "run"
        run_dir.mkdir(parents=True)
        config = {"name": "kit", "train": {"lr": 0.003, "steps": steps}, "levels": [{"dim": 8}]}

        with _invariant(component, "opening returns a MetricWriter"):
            opened = opener(MetricRun(directory=run_dir, name="kit", config=config))
            assert isinstance(opened, MetricWriter), f"open returned {type(opened).__name__}"
        with _invariant(component, "flush and close are idempotent"):
            try:
                _events(opened, 1, range(1, steps + 1))
                opened.flush()
                _again(opened.flush, "flush")
            finally:
                opened.close()  # as on a crash path: closed whatever happened
            _again(opened.close, "close")
        with _invariant(component, "what a run wrote reads back, each step once"):
            _compare(read(run_dir), _expected(steps))

        with _invariant(component, "a resumed run keeps the steps up to its checkpoint and drops the later ones"):
            again = opener(MetricRun(directory=run_dir, name="kit", resume_step=resume_step, config=config))
            try:
                _events(again, 2, range(resume_step + 1, steps + 3))
            finally:
                again.close()
            _compare(read(run_dir), _expected(steps, resume_step, steps + 2))

        if is_spec:
            with _invariant(component, "the other processes of a distributed run write nothing"):
                from aunet.jobs.config import MetricsSpec
                from aunet.jobs.train.metrics import MetricWriters

                other = root / "other"
                other.mkdir()
                with MetricWriters(
                    other, MetricsSpec(tensorboard=False, writers=(writer,)), purge_step=None, enabled=False
                ) as writers:
                    writers.write({"step": 1, "loss": 1.0})
                    writers.scalars(1, {"train/loss": 1.0})
                    writers.flush()
                left = sorted(str(p.relative_to(other)) for p in other.rglob("*"))
                assert not left, f"a process other than the first wrote {left}"
