"""``aunet train``: the main job (docs/method.md section 6).

The loop reads as a sequence of components, each owning its config table::

    with stop_flag, metrics:
        while not budget.done(trainer):
            result = trainer.step(budget.fraction(trainer))   # [train]: the recipe
            metrics.log(result)                                # [train.metrics]
            evaluator.maybe(trainer, metrics)                  # [train.eval]
            checkpointer.maybe_save(trainer)                   # [train.checkpoint]
    sampler.sample(model)                                      # [train.sample]

AdamW (betas 0.9/0.95, eps 1e-8), weight decay on matrices only unless asked, linear warmup then
cosine to ``min_lr_ratio`` of the peak, gradient clipping, gradient accumulation, bf16 autocast
(``precision``: ``auto`` is bf16 on CUDA), torch.compile, one seed for everything, any device.
Progress goes to stderr (a live line on a terminal, periodic lines otherwise), metrics to
``metrics.jsonl`` and TensorBoard (``tb/``), checkpoints to ``checkpoints/``
(``aunet.jobs.checkpoint``).

Stopping. Ctrl-C (SIGINT) finishes the current step, writes a checkpoint and returns; a second
Ctrl-C stops at once, and the last complete checkpoint is still intact. A loss, gradient or weight
that stops being finite stops the run without saving and names the step (it is noticed at the
next logging step or checkpoint: the loop never waits for the device in between); the last good
checkpoint is kept.

Resuming. ``--resume`` restores the weights, optimizer, schedule, RNG states and the data position
of the newest checkpoint and continues the same run: with a step budget the result is bit-identical
to an uninterrupted run on CPU.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import attrs

from aunet.core.contraction import contraction_of
from aunet.core.errors import InputError
from aunet.core.spec import (
    CheckpointSpec, EvalSpec, SampleSpec, Spec, TrainSpec, dump_spec, parse_spec, resolve_spec,
)  # fmt: skip
from aunet.jobs import checkpoint
from aunet.jobs.data import Encoded, TrainingData, encode_documents, load_corpus, xz_bits_per_byte
from aunet.jobs.metrics import MetricWriters, Progress
from aunet.jobs.runs import RUN_FILE, SPEC_FILE, stamp
from aunet.jobs.trainer import StepResult, Trainer, TrainingDiverged

__all__ = ["RunSummary", "TrainingDiverged", "train"]


@attrs.frozen
class RunSummary:
    """How a run ended."""

    run_dir: Path
    step: int
    interrupted: bool
    losses: tuple[float, ...]  # training loss (nats) of every step of this invocation
    val_bpb: float | None
    xz_bpb: float | None
    val_bytes: int
    sample: bytes | None
    checkpoint: Path | None


class Budget:
    """When the run is done: a number of optimizer steps, or minutes of training (then the
    schedule follows elapsed time, and runs are not bit-reproducible)."""

    def __init__(self, config: TrainSpec) -> None:
        self.steps = config.steps
        self.seconds = None if config.steps is not None else config.minutes * 60.0

    def fraction(self, trainer: Trainer) -> float:
        if self.steps is not None:
            return trainer.step_count / self.steps
        return trainer.elapsed / self.seconds

    def done(self, trainer: Trainer) -> bool:
        return self.fraction(trainer) >= 1.0

    def eta(self, trainer: Trainer, seconds_per_step: float) -> float:
        if self.steps is not None:
            return (self.steps - trainer.step_count) * seconds_per_step
        return max(0.0, self.seconds - trainer.elapsed)


class Checkpointer:
    """Writes the trainer's state every ``every`` steps (and at the end), keeps ``keep``."""

    def __init__(self, run_dir: Path, config: CheckpointSpec, spec: Spec) -> None:
        self.run_dir = run_dir
        self.config = config
        self.meta = {"spec_name": spec.name, "spec": dump_spec(spec)}  # a checkpoint is self-contained
        self.last: Path | None = checkpoint.latest(run_dir) if (run_dir / checkpoint.CHECKPOINTS).is_dir() else None
        self.saved_step = int(self.last.name.split("-")[1]) if self.last else -1

    def maybe_save(self, trainer: Trainer, *, final: bool) -> None:
        if trainer.step_count % self.config.every == 0 and not final:
            self.save(trainer)

    def save(self, trainer: Trainer) -> Path:
        """A checkpoint of the trainer now, once its weights are known to be finite."""
        problem = trainer.divergence()
        if problem:
            raise diverged(problem, self.last)
        weights, tensors, data = trainer.state()
        meta = {**self.meta, "elapsed_s": trainer.elapsed}
        self.last = checkpoint.save(self.run_dir, trainer.step_count, weights, tensors, data, keep=self.config.keep,
                                    extra_meta=meta)  # fmt: skip
        self.saved_step = trainer.step_count
        return self.last


def diverged(problem: str, last: Path | None) -> TrainingDiverged:
    good = f"the last good checkpoint is {last.name}" if last else "no checkpoint was written yet"
    return TrainingDiverged(f"{problem}; stopped without saving; {good} (try a lower train.lr, or train.clip)")


class StepLog:
    """The training loop's metric writer: reads a step's figures back at logging steps only."""

    def __init__(self, writers: MetricWriters, progress: Progress, budget: Budget, checkpointer: Checkpointer) -> None:
        self.writers = writers
        self.progress = progress
        self.budget = budget
        self.checkpointer = checkpointer
        self.losses: list[Any] = []  # () device tensors, read once at the end
        self._window = (0, 0.0)  # bytes and seconds since the last logging step
        self._shown: tuple[float | None, float | None] = (None, None)

    def log(self, trainer: Trainer, result: StepResult) -> None:
        self.losses.append(result.loss)
        window_bytes, window_s = self._window[0] + result.bytes, self._window[1] + result.seconds
        logged = self.writers.due(result.step)
        if logged:
            # A synchronisation point on CUDA: the only one of an ordinary training step.
            problem = trainer.divergence()
            if problem:
                raise diverged(problem, self.checkpointer.last)
            loss, grad_norm = float(result.loss), float(result.grad_norm)
            predicted = int(result.predicted)
            per_segment = [predicted / s if s else None for s in result.segments.tolist()]
            dropped = result.dropped.tolist()
            bytes_per_s = window_bytes / window_s if window_s else 0.0
            record = {"step": result.step, "loss": loss, "bpb": loss / math.log(2), "lr": result.lr,
                      "grad_norm": grad_norm, "bytes_per_s": bytes_per_s, "bytes_seen": trainer.bytes_seen,
                      "elapsed_s": trainer.elapsed, "bytes_per_segment": per_segment, "dropped": dropped}  # fmt: skip
            self.writers.write(record)
            self.writers.scalars(result.step, {f"train/{k}": record[k] for k in ("loss", "bpb", "lr", "grad_norm", "bytes_per_s")})
            self.writers.scalars(result.step, {f"levels/bytes_per_segment_{i}": k for i, k in enumerate(per_segment, start=1)})
            self.writers.scalars(result.step, {f"levels/dropped_{i}": d for i, d in enumerate(dropped, start=1)})
            self._shown = (loss, bytes_per_s)
            self._window = (0, 0.0)
        else:
            self._window = (window_bytes, window_s)
        seconds_per_step = trainer.elapsed / max(trainer.step_count, 1)
        self.progress.update(result.step, self.budget.steps, self._shown[0], self._shown[1],
                             self.budget.eta(trainer, seconds_per_step), logged=logged)  # fmt: skip

    def all_losses(self) -> tuple[float, ...]:
        import torch

        return tuple(torch.stack(self.losses).tolist()) if self.losses else ()


class Evaluator:
    """Validation bits per byte: on ``bytes`` of the split every ``every`` steps, on all of it
    at the end."""

    def __init__(self, docs: list[Encoded], config: EvalSpec, *, context: int, batch_size: int) -> None:
        self.docs = docs
        self.config = config
        self.context = context
        self.batch_size = config.batch_size or batch_size

    def maybe(self, trainer: Trainer, writers: MetricWriters, progress: Progress, *, final: bool) -> None:
        step = trainer.step_count
        if step % self.config.every or final:
            return
        result = self.run(trainer, limit_bytes=self.config.bytes)
        writers.write({"step": step, "val_bpb": result.bpb, "val_bytes": result.bytes})
        writers.scalars(step, {"val/bpb": result.bpb})
        progress.message(f"step {step}: validation {result.bpb:.4f} bits per byte ({result.bytes:,} bytes)")

    def run(self, trainer: Trainer, limit_bytes: int | None = None) -> Any:
        from aunet.jobs.evaluate import evaluate

        return evaluate(trainer.model, self.docs, context=self.context, batch_size=self.batch_size,
                        limit_bytes=limit_bytes, autocast=trainer.autocast())  # fmt: skip


class Sampler:
    """The continuation of a fixed prompt printed at the end of a run."""

    def __init__(self, config: SampleSpec, seed: int) -> None:
        self.config = config
        self.seed = seed

    def sample(self, model: Any) -> bytes | None:
        from aunet.jobs.devices import default_decode_threads
        from aunet.jobs.generate import generate

        if not self.config.bytes:
            return None
        device = next(model.parameters()).device
        return generate(model, [self.config.prompt.encode()], self.config.bytes, temperature=self.config.temperature,
                        top_k=self.config.top_k, seed=self.seed, threads=default_decode_threads(1, device))[0]  # fmt: skip


class _StopFlag:
    """SIGINT sets the flag (the loop stops after the step); a second SIGINT interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


@attrs.frozen
class _Start:
    """What a run starts (or resumes) from."""

    spec: Spec
    data: str | None
    resume_from: Path | None


def _start(spec: Spec | None, data: str | Path | None, run_dir: Path, *, resume: bool, progress: Progress) -> _Start:
    if not resume:
        if (run_dir / SPEC_FILE).exists() or (run_dir / checkpoint.CHECKPOINTS).exists():
            raise InputError(f"--out: '{run_dir}' already holds a run; add --resume to continue it, or choose "
                             "another --out")  # fmt: skip
        if spec is None:
            raise InputError("no spec given")
        return _Start(spec, None if data is None else str(data), None)
    found = checkpoint.latest(run_dir) if (run_dir / checkpoint.CHECKPOINTS).is_dir() else None
    if found is None:
        raise InputError(f"--resume: '{run_dir}' holds no checkpoint to resume; start a run there without --resume")
    run_spec = parse_spec((run_dir / SPEC_FILE).read_text(encoding="utf-8"), source=str(run_dir / SPEC_FILE))
    if spec is not None and _comparable(spec, run_spec) != _comparable(run_spec, run_spec):
        raise InputError(f"--resume: the run at '{run_dir}' was started with another spec; omit --spec "
                         "(and --set) to resume it as it was")  # fmt: skip
    started_on = json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8")).get("data")
    if data is not None and str(data) != str(started_on):
        raise InputError(f"--resume: the run at '{run_dir}' was started on --data {started_on or '(embedded)'}; "
                         "omit --data to resume it on the same data")  # fmt: skip
    progress.message(f"resuming {run_dir} from {found.name}")
    return _Start(run_spec, started_on, found)


def _comparable(spec: Spec, run_spec: Spec) -> Any:
    """A spec without its stamp and budget, for comparing what a run was started with (levels
    that give no contraction take the run's measured one)."""
    levels = tuple(level if level.contraction is not None or i >= len(run_spec.levels)
                   else attrs.evolve(level, contraction=run_spec.levels[i].contraction)
                   for i, level in enumerate(spec.levels))  # fmt: skip
    resolved = resolve_spec(attrs.evolve(spec, levels=levels))
    return attrs.evolve(resolved, stamp={}, train=attrs.evolve(resolved.train, steps=None, minutes=None))


def train(spec: Spec | None, *, data: str | Path | None, out: str | Path, steps: int | None = None,
          minutes: float | None = None, resume: bool = False, stop_at: int | None = None, device: Any = "auto",
          stream: IO[str] = sys.stderr, on_step: Callable[[int, float], None] | None = None) -> RunSummary:  # fmt: skip
    """Train (or resume) a run; see the module docstring. ``on_step(step, loss)`` is called after
    every step (it reads the loss back: for tests and notebooks, not for speed)."""
    import torch

    from aunet.core.model import build_model
    from aunet.jobs.devices import resolve_device

    run_dir = Path(out)
    progress = Progress(stream)
    start = _start(spec, data, run_dir, resume=resume, progress=progress)
    spec = start.spec
    if steps is not None or minutes is not None:
        spec = attrs.evolve(spec, train=attrs.evolve(spec.train, steps=steps, minutes=minutes if steps is None else None))
    t = spec.train
    if t.steps is None and t.minutes is None:
        raise InputError("no budget: give --steps N or --minutes M (or train.steps / train.minutes in the spec)")
    device = resolve_device(device)

    corpus = load_corpus(start.data)
    stack = spec.splitter_stack()
    train_docs = encode_documents(corpus.train, stack)
    val_docs = encode_documents(corpus.validation, stack)
    if not val_docs:
        raise InputError(f"the validation split of {corpus.source} is empty; give more text")
    if start.resume_from is None:
        measured = contraction_of((d.levels for d in train_docs), spec.depth)
        spec = stamp(resolve_spec(spec, contraction=measured))
    training_data = TrainingData(train_docs, context=spec.model.context, batch_size=t.batch_size, seed=t.seed)

    torch.manual_seed(t.seed)
    model = build_model(spec, device=device)
    trainer = Trainer(spec, model, data=training_data, device=device)
    if start.resume_from is not None:
        weights, _ = checkpoint.load_model(start.resume_from)
        model.load_state_dict(weights)
        tensors, state = checkpoint.load_trainer(start.resume_from)
        for notice in trainer.load_state(tensors, state):
            progress.message(f"note: {notice}")
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        checkpoint.atomic_write_text(run_dir / RUN_FILE, json.dumps({"data": start.data}))
        checkpoint.atomic_write_text(run_dir / SPEC_FILE, dump_spec(spec))

    budget = Budget(t)
    checkpointer = Checkpointer(run_dir, t.checkpoint, spec)
    evaluator = Evaluator(val_docs, t.eval, context=spec.model.context, batch_size=t.batch_size)
    interrupted = False
    with _StopFlag() as stop, MetricWriters(run_dir, t.metrics) as writers:
        log = StepLog(writers, progress, budget, checkpointer)
        while not budget.done(trainer):
            if stop.requested or (stop_at is not None and trainer.step_count >= stop_at):
                interrupted = True
                break
            result = trainer.step(budget.fraction(trainer))
            log.log(trainer, result)
            if on_step is not None:
                on_step(result.step, float(result.loss))
            final = budget.done(trainer)
            evaluator.maybe(trainer, writers, progress, final=final)
            checkpointer.maybe_save(trainer, final=final)
        if trainer.step_count != checkpointer.saved_step:
            checkpointer.save(trainer)
        losses = log.all_losses()
        if interrupted:
            return RunSummary(run_dir, trainer.step_count, True, losses, None, None, 0, None, checkpointer.last)
        progress.message(f"trained {trainer.step_count} steps in {trainer.elapsed / 60:.1f} minutes; evaluating on "
                         f"{corpus.source} validation")  # fmt: skip
        result = evaluator.run(trainer, limit_bytes=t.eval.final_bytes)
        xz = xz_bits_per_byte(corpus.validation_bytes[: t.eval.final_bytes])
        writers.write({"step": trainer.step_count, "val_bpb": result.bpb, "val_bytes": result.bytes, "xz_bpb": xz,
                       "final": True})  # fmt: skip
        writers.scalars(trainer.step_count, {"val/bpb": result.bpb})
    sample = Sampler(t.sample, t.seed).sample(model)
    return RunSummary(run_dir, trainer.step_count, False, losses, result.bpb, xz, result.bytes, sample,
                      checkpointer.last)  # fmt: skip
