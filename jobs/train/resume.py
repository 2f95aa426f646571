"""Where a run starts from: a new run, a resumed one, or one restarted because it never reached a
checkpoint; and what a resume may change.

Rules (``aunet train --resume``):

* It continues from the newest checkpoint whose files all verify, whatever ``checkpoints/latest``
  says. A run that stopped before its first checkpoint restarts from step 0, with a notice.
* ``spec.toml`` and ``run.json`` are recovered from the newest checkpoint when they are missing.
* The model (``[model]`` and ``[[levels]]``) cannot change. The recipe (``[train]``) can, with
  ``--set train.lr=1e-3`` or another ``--spec``; each change is recorded in ``run.json``'s history.
* The budget can change only where the learning rate would not jump: a finished run of N steps
  extended to M > N steps continues at the schedule's final rate (``train.decay_steps`` becomes N);
  an unfinished run's budget stays (use ``--stop-at`` to stop it early).
* The data must be the same: the same file (however its path is spelt, from any directory) with
  the same content (sizes and SHA-256 of every file read).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import attrs

from aunet.core.convert import spec_to_dict
from aunet.core.errors import InputError
from aunet.core.overrides import apply_overrides
from aunet.core.spec import Spec, resolve_spec
from aunet.core.version import version
from aunet.jobs.config import Parallel, parse_spec
from aunet.jobs.data.corpus import data_key
from aunet.jobs.runs import checkpoint
from aunet.jobs.runs.checkpoint import Verified
from aunet.jobs.runs.directory import RUN_FILE, SPEC_FILE, RunRecord, read_record, read_run_spec
from aunet.jobs.train.metrics import Progress
from aunet.jobs.train.schedule import schedule


@attrs.frozen
class RunStart:
    """What an invocation of ``aunet train`` starts from."""

    spec: Spec  # the spec to train with (for a new run: not yet resolved)
    data: str | None  # the data path as given or recorded (None: the embedded corpus)
    record: RunRecord | None  # the run's record so far (None: a new run)
    checkpoint: Verified | None  # the checkpoint to resume from, its files verified once
    changes: dict[str, list[Any]]  # recipe changes of this invocation: {path: [old, new]}
    restarted: bool  # a resume of a run that had no complete checkpoint

    @property
    def meta(self) -> dict[str, Any]:
        """The checkpoint's meta.json ({} without one)."""
        return self.checkpoint.meta if self.checkpoint is not None else {}


@attrs.frozen
class Requested:
    """What an invocation asks to train, read once before anything starts (the process group
    needs its ``train.parallel``): the spec given or the run's own ``spec.toml``, with ``--set``
    applied. ``run_spec`` is ``spec.toml`` as read (None where it is missing: a resume then
    recovers it from its checkpoint and applies ``overrides`` there)."""

    spec: Spec | None
    run_spec: Spec | None = None
    overrides: tuple[str, ...] = ()

    @property
    def parallel(self) -> Parallel:
        return self.spec.train.parallel if self.spec is not None else Parallel.NONE


def requested(spec: Spec | None, overrides: list[str], run_dir: Path, *, resume: bool) -> Requested:
    """The spec this invocation trains with, before its run directory is claimed."""
    if not resume:
        return Requested(apply_overrides(spec, overrides) if overrides and spec is not None else spec)
    run_spec = read_run_spec(run_dir)
    base = spec if spec is not None else run_spec
    if base is None:
        return Requested(None, None, tuple(overrides))
    return Requested(apply_overrides(base, overrides) if overrides else base, run_spec)


def _holds_run(run_dir: Path) -> bool:
    return any((run_dir / name).exists() for name in (SPEC_FILE, RUN_FILE, checkpoint.CHECKPOINTS))


def new_run(spec: Spec | None, data: str | Path | None, run_dir: Path) -> RunStart:
    """A new run of ``spec`` (``--set`` applied) in ``run_dir``, which must hold none."""
    if run_dir.is_dir() and _holds_run(run_dir):
        has = "" if checkpoint.newest_complete(run_dir)[0] else " (it has no complete checkpoint: --resume restarts it)"
        raise InputError(
            f"--out: '{run_dir}' already holds a run; add --resume to continue it{has}, or choose another --out"
        )
    if spec is None:
        raise InputError("no spec given")
    return RunStart(spec, None if data is None else str(data), None, None, {}, False)


def check_resumable(run_dir: Path) -> None:
    """InputError unless ``run_dir`` holds a run (one stopped before it wrote its files, at
    startup, holds none: start it again without --resume)."""
    if not run_dir.is_dir() or not _holds_run(run_dir):
        why = "it does not exist" if not run_dir.exists() else "a run stopped while starting leaves none"
        raise InputError(f"--resume: '{run_dir}' holds no run to resume ({why}); start a run there without --resume")


def resume_run(
    wanted: Requested,
    data: str | Path | None,
    run_dir: Path,
    *,
    steps: int | None,
    minutes: float | None,
    progress: Progress,
) -> RunStart:
    """The start of a resumed run: its newest checkpoint found and verified (the only time its
    files are hashed), its spec and record, and the recipe changes checked against the rules of
    the module docstring."""
    check_resumable(run_dir)
    found, notices = checkpoint.newest_complete(run_dir)
    if found is None and notices:  # checkpoints there, none intact: never start over on a hunch
        raise checkpoint.CheckpointError(
            f"--resume: no checkpoint of '{run_dir}' verifies ({notices[0]}); restore "
            "it, or delete the checkpoints to restart the run from step 0"
        )
    meta = found.meta if found else {}
    for notice in notices:
        progress.message(f"note: {notice}")
    run_spec = wanted.run_spec
    if run_spec is None:
        if not isinstance(meta.get("spec"), str):
            raise InputError(
                f"--resume: '{run_dir}' has no {SPEC_FILE} and no complete checkpoint to recover it "
                "from; start a new run"
            )
        run_spec = parse_spec(meta["spec"], source=f"{found.path}/meta.json")
        progress.message(f"note: {run_dir / SPEC_FILE} is missing; using the spec recorded in {found.path.name}")
    record = read_record(run_dir)
    if record is None:
        if isinstance(meta.get("run"), dict):
            record = RunRecord.from_json(meta["run"], f"{found.path}/meta.json")
            progress.message(f"note: {run_dir / RUN_FILE} is missing; using the data record of {found.path.name}")
        elif data is not None:
            record = RunRecord(data_key(data), {})
            progress.message(f"note: {run_dir / RUN_FILE} is missing; the run continues on --data {data}")
        else:
            raise InputError(f"--resume: '{run_dir}' has no {RUN_FILE}; give --data to say what the run trains on")
    if found is not None and isinstance(meta.get("spec"), str):
        written = parse_spec(meta["spec"], source=f"{found.path}/meta.json")
        changed = model_changes(written, run_spec)
        if changed:
            raise InputError(
                f"--resume: checkpoint {found.path.name} was written by another model than {SPEC_FILE} "
                f"describes ({changed[0]}); restore {SPEC_FILE} or start a new run"
            )
    base = wanted.spec
    if base is None:  # spec.toml was missing: its overrides apply to the recovered spec
        base = apply_overrides(run_spec, list(wanted.overrides)) if wanted.overrides else run_spec
    step = found.step if found else 0
    new_spec, changes = _recipe(
        run_spec, base, run_dir, step=step if found else 0, steps=steps, minutes=minutes, progress=progress
    )
    _same_data(record, data, run_dir)
    if found is None:
        progress.message(f"note: '{run_dir}' holds no complete checkpoint; restarting the run from step 0")
    else:
        progress.message(f"resuming {run_dir} from {found.path.name} (step {step})")
    return RunStart(new_spec, record.data, record, found, changes, found is None)


def model_changes(before: Spec, after: Spec) -> list[str]:
    """Differences of the model part (``[model]``, ``[[levels]]``), for humans. A level whose
    contraction is unset in ``after`` takes ``before``'s measured one."""
    levels = tuple(
        level
        if level.contraction is not None or i >= len(before.levels)
        else attrs.evolve(level, contraction=before.levels[i].contraction)
        for i, level in enumerate(after.levels)
    )
    a = spec_to_dict(resolve_spec(before))
    b = spec_to_dict(resolve_spec(attrs.evolve(after, levels=levels)))
    return [
        f"{path}: {old!r} -> {new!r}"
        for path, old, new in _diff(
            {"model": a.get("model"), "levels": a.get("levels")}, {"model": b.get("model"), "levels": b.get("levels")}
        )
    ]


def _diff(a: Any, b: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            out += _diff(a.get(key), b.get(key), f"{path}.{key}" if path else str(key))
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [(path, a, b)]


def _recipe(
    run_spec: Spec,
    spec: Spec,
    run_dir: Path,
    *,
    step: int,
    steps: int | None,
    minutes: float | None,
    progress: Progress,
) -> tuple[Spec, dict[str, list[Any]]]:
    """The run's spec with the recipe of ``spec`` (and the budget given), checked against the rules
    of the module docstring; the changes made."""
    changed = model_changes(run_spec, spec)
    if changed:
        more = f" and {len(changed) - 1} more" if len(changed) > 1 else ""
        raise InputError(
            f"--resume: the run at '{run_dir}' was started with another model ({changed[0]}{more}); a "
            "resume may change [train] values only; omit --spec, or start a new run"
        )
    old = run_spec.train
    new = spec.train
    if old.level_lr != new.level_lr and step > 0:
        raise InputError(
            f"--resume: the run at '{run_dir}' trains with train.level_lr = {list(old.level_lr)}; its optimizer "
            "state is grouped by those multipliers, so they cannot change on resume; keep them, or start a new run"
        )
    if steps is not None or minutes is not None:
        new = attrs.evolve(new, steps=steps, minutes=minutes if steps is None else None)
    new = _budget(old, new, step, run_dir, progress)
    resumed = attrs.evolve(run_spec, train=new)
    changes = {
        f"train.{path}": [a, b] for path, a, b in _diff(spec_to_dict(run_spec)["train"], spec_to_dict(resumed)["train"])
    }
    for path, (a, b) in changes.items():
        progress.message(f"note: {path} changes from {a!r} to {b!r} from step {step + 1} (recorded in {RUN_FILE})")
    return resumed, changes


def _budget(old: Any, new: Any, step: int, run_dir: Path, progress: Progress) -> Any:
    if (old.steps, old.minutes, old.decay_steps) == (new.steps, new.minutes, new.decay_steps) or step == 0:
        return new  # unchanged, or nothing trained yet
    if old.steps is None or new.steps is None:
        if (old.steps, old.minutes) != (new.steps, new.minutes):
            raise InputError(
                f"--resume: the run at '{run_dir}' has a budget of {_budget_text(old)}; a resume cannot "
                f"change a budget in minutes (the schedule follows elapsed time); omit --steps and "
                "--minutes"
            )
        return new
    horizon_old = old.decay_steps or old.steps
    horizon_new = new.decay_steps or new.steps
    if horizon_new == horizon_old:
        return new
    if step >= old.steps and new.steps > old.steps and new.decay_steps is None:
        final = schedule(old, step, 1.0)
        progress.message(
            f"note: extending the finished {old.steps}-step run to {new.steps} steps: steps "
            f"{old.steps + 1} to {new.steps} run at its final learning rate {final:.3g} "
            f"(train.decay_steps = {old.steps})"
        )
        return attrs.evolve(new, decay_steps=old.steps)
    before = schedule(old, step, min(step / horizon_old, 1.0))
    after = schedule(new, step, min(step / horizon_new, 1.0))
    state = "finished" if step >= old.steps else f"at step {step} of"
    raise InputError(
        f"--resume: the run at '{run_dir}' is {state} a {old.steps}-step schedule; --steps {new.steps} "
        f"would move its cosine (the learning rate would go from {before:.3g} to {after:.3g}); "
        + (
            "omit --steps to finish it, or stop it early with --stop-at"
            if step < old.steps
            else "extend it with a larger --steps"
        )
    )


def _budget_text(t: Any) -> str:
    return f"{t.steps} steps" if t.steps is not None else f"{t.minutes} minutes"


def _same_data(record: RunRecord, data: str | Path | None, run_dir: Path) -> None:
    if data is None:
        return
    if data_key(record.data) != data_key(data):
        started = record.data or "the embedded corpus"
        raise InputError(
            f"--resume: the run at '{run_dir}' trains on {started}; omit --data to resume it on the same data"
        )


def history_entry(start: RunStart, step: int) -> dict[str, Any]:
    """One line of ``run.json``'s history: this invocation."""
    entry: dict[str, Any] = {"step": step, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "aunet": version()}
    if start.record is not None:
        entry["resumed"] = True
    if start.restarted:
        entry["restarted"] = True
    if start.changes:
        entry["changes"] = start.changes
    return entry
