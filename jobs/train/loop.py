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
``metrics.jsonl``, TensorBoard (``tb/``) and the other ``[train.metrics] writers``, checkpoints
to ``checkpoints/`` (``aunet.jobs.runs.checkpoint``).

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

import contextlib
import io
import json
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import attrs

from aunet.core.contraction import contraction_of
from aunet.core.errors import AunetError, InputError
from aunet.core.levels import SplitterStack
from aunet.core.spec import (
    CheckpointSpec,
    EvalSpec,
    Parallel,
    SampleSpec,
    Spec,
    TrainSpec,
    apply_overrides,
    dump_spec,
    resolve_spec,
)
from aunet.jobs.data.corpus import TokenEncoding, fingerprint_changes
from aunet.jobs.data.source import training_text
from aunet.jobs.runs import checkpoint
from aunet.jobs.runs.directory import RUN_FILE, SPEC_FILE, RunClaim, RunRecord, check_out, stamp, truncate_metrics
from aunet.jobs.runtime.distributed import World, process_group
from aunet.jobs.runtime.files import write_text
from aunet.jobs.train.metrics import MetricWriters, Progress, check_available
from aunet.jobs.train.resume import RunStart, check_resumable, history_entry, new_run, resume_run
from aunet.jobs.train.trainer import StepResult, Trainer, TrainingDiverged

__all__ = ["RunSummary", "TrainingDiverged", "train"]


@attrs.frozen
class Throughput:
    """What an invocation's training steps cost: time, bytes, model FLOPs, memory."""

    steps: int  # steps this invocation trained
    seconds: float  # their training time (evaluations and checkpoints excluded)
    bytes: int  # bytes they read
    flops_per_byte: float  # the paper's accounting (``aunet spec show``), forward and backward
    peak_flops: float  # this device's measured dense matmul FLOP/s in the run's precision
    peak_host_memory: int | None  # this process's peak resident memory, bytes
    peak_device_memory: int | None = None  # peak bytes allocated on a CUDA device

    @property
    def bytes_per_s(self) -> float:
        return self.bytes / self.seconds if self.seconds > 0 else 0.0

    @property
    def flops_per_s(self) -> float:
        return self.flops_per_byte * self.bytes_per_s

    @property
    def mfu(self) -> float:
        """Model FLOPs utilisation: the model's FLOP/s as a share of the measured matmul peak."""
        return self.flops_per_s / self.peak_flops if self.peak_flops > 0 else 0.0


@attrs.frozen
class RunSummary:
    """How a run ended."""

    run_dir: Path
    step: int
    interrupted: bool
    losses: tuple[float, ...]  # training loss (nats per position) of every step of this invocation
    val_bpb: float | None
    xz_bpb: float | None
    val_bytes: int
    sample: bytes | None
    checkpoint: Path | None
    signal: int | None = None  # the signal that stopped it (SIGINT, SIGTERM, SIGHUP), if one did
    throughput: Throughput | None = None
    train_bpb: float | None = None  # the last step's training loss in bits per byte
    val_whole: bool = True  # the final evaluation covered the whole validation split
    prompt: bytes = b""  # the sample's prompt


def duration(seconds: float) -> str:
    """``120 ms``, ``12.3 s``, ``4.5 minutes``, ``2.1 hours``."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 90:
        return f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} minutes"
    return f"{seconds / 3600:.1f} hours"


def memory_text(n_bytes: int | None) -> str:
    return "unknown" if n_bytes is None else f"{n_bytes / 2**20:,.0f} MiB"


class Budget:
    """When the run is done: a number of optimizer steps, or minutes of training (then the
    schedule follows elapsed time, and runs are not bit-reproducible)."""

    def __init__(self, config: TrainSpec) -> None:
        self.steps = config.steps
        self.decay_steps = config.decay_steps or config.steps
        self.seconds = None if config.steps is not None else config.minutes * 60.0

    def fraction(self, trainer: Trainer) -> float:
        """How much of the learning-rate decay is done (1 and beyond: the final rate)."""
        if self.steps is not None:
            return trainer.step_count / self.decay_steps
        return trainer.elapsed / self.seconds

    def done(self, trainer: Trainer) -> bool:
        if self.steps is not None:
            return trainer.step_count >= self.steps
        return trainer.elapsed >= self.seconds

    def eta(self, trainer: Trainer, seconds_per_step: float) -> float:
        if self.steps is not None:
            return (self.steps - trainer.step_count) * seconds_per_step
        return max(0.0, self.seconds - trainer.elapsed)


class Checkpointer:
    """Writes the trainer's state every ``every`` steps (and at the end), keeps ``keep``."""

    def __init__(
        self,
        run_dir: Path,
        config: CheckpointSpec,
        spec: Spec,
        record: RunRecord,
        world: World,
        tokenizer: Any = None,
        last: Path | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.config = config
        self.world = world
        # A checkpoint is self-contained: the spec and the data record are in its meta.json too,
        # and a BPE model's tokenizer (JSON, as everything aunet reads back).
        self.meta = {
            "spec_name": spec.name,
            "spec": dump_spec(spec),
            "run": {"data": record.data, "fingerprint": record.fingerprint},
        }
        if tokenizer is not None:
            self.meta["tokenizer"] = json.loads(tokenizer.to_json())
        self.last = last
        self.saved_step = int(last.name.split("-")[1]) if last else -1

    def maybe_save(self, trainer: Trainer, *, final: bool) -> None:
        if trainer.step_count % self.config.every == 0 and not final:
            self.save(trainer)

    def save(self, trainer: Trainer) -> Path:
        """A checkpoint of the trainer now, once its weights are known to be finite."""
        problem = trainer.divergence()
        if problem:
            raise self.diverged(problem)
        weights, tensors, data = trainer.state()
        data["rng_by_rank"] = self.world.gather(data["rng"])
        meta = {
            **self.meta,
            "elapsed_s": trainer.elapsed,
            "processes": self.world.size,
            "parallel": self.world.parallel.value,
        }
        self.last = checkpoint.save(
            self.run_dir,
            trainer.step_count,
            weights,
            tensors,
            data,
            keep=self.config.keep,
            extra_meta=meta,
            world=self.world,
            sharded=self.world.parallel is Parallel.FSDP,
        )
        self.saved_step = trainer.step_count
        return self.last

    def diverged(self, problem: str) -> TrainingDiverged:
        """The error of a run that stopped being sane (``Trainer.divergence``), with advice that
        can work: every checkpoint written is sane, so the last one can be resumed from."""
        if self.last is None:
            return TrainingDiverged(
                f"{problem}; stopped without saving; no checkpoint was written yet: start the "
                "run again with a lower train.lr (or train.clip)"
            )
        return TrainingDiverged(
            f"{problem}; stopped without saving; the last good checkpoint is {self.last.name}: "
            "resume from it with a lower rate (--resume --set train.lr=...), or train.clip"
        )


class StepLog:
    """The training loop's metric writer: reads a step's figures back at logging steps only."""

    def __init__(
        self,
        writers: MetricWriters,
        progress: Progress,
        budget: Budget,
        checkpointer: Checkpointer,
        bytes_per_position: float = 1.0,
        *,
        flops_per_byte: float = 0.0,
        peak_flops: float = 0.0,
        device: Any = None,
    ) -> None:
        self.writers = writers
        self.bytes_per_position = bytes_per_position  # a BPE model's loss is per token
        self.progress = progress
        self.budget = budget
        self.checkpointer = checkpointer
        self.flops_per_byte = flops_per_byte
        self.peak_flops = peak_flops
        self.device = device
        self.losses: list[Any] = []  # () device tensors, read once at the end
        self._window = (0, 0.0)  # bytes and seconds since the last logging step
        self._shown: tuple[float | None, float | None, float | None] = (None, None, None)

    def log(self, trainer: Trainer, result: StepResult) -> None:
        from aunet.jobs.runtime.devices import peak_device_memory, peak_host_memory

        self.losses.append(result.loss)
        window_bytes, window_s = self._window[0] + result.bytes, self._window[1] + result.seconds
        logged = self.writers.due(result.step)
        if logged:
            # A synchronisation point on CUDA: the only one of an ordinary training step.
            problem = trainer.divergence()
            if problem:
                raise self.checkpointer.diverged(problem)
            figures = trainer.figures(result)
            loss, grad_norm, predicted = figures["loss"], figures["grad_norm"], figures["predicted"]
            per_segment = [predicted / s if s else None for s in figures["segments"]]
            dropped = figures["dropped"]
            bytes_per_s = window_bytes / window_s if window_s else 0.0
            flops_per_s = self.flops_per_byte * bytes_per_s
            mfu = flops_per_s / self.peak_flops if self.peak_flops else None
            bpb = loss / math.log(2) / self.bytes_per_position
            record = {
                "step": result.step,
                "loss": loss,
                "bpb": bpb,
                "lr": result.lr,
                "grad_norm": grad_norm,
                "bytes_per_s": bytes_per_s,
                "flops_per_s": flops_per_s,
                "mfu": mfu,
                "bytes_seen": trainer.bytes_seen,
                "elapsed_s": trainer.elapsed,
                "peak_memory_bytes": peak_host_memory(),
                "bytes_per_segment": per_segment,
                "dropped": dropped,
            }
            device_peak = peak_device_memory(self.device) if self.device is not None else None
            if device_peak is not None:
                record["peak_device_memory_bytes"] = device_peak
            if "level_loss" in figures:  # the level head's loss, apart from the next-byte loss
                record["level_loss"] = figures["level_loss"]
                self.writers.scalars(result.step, {"train/level_loss": figures["level_loss"]})
            self.writers.write(record)
            self.writers.scalars(
                result.step, {f"train/{k}": record[k] for k in ("loss", "bpb", "lr", "grad_norm", "bytes_per_s", "mfu")}
            )
            self.writers.scalars(
                result.step, {f"levels/bytes_per_segment_{i}": k for i, k in enumerate(per_segment, start=1)}
            )
            self.writers.scalars(result.step, {f"levels/dropped_{i}": d for i, d in enumerate(dropped, start=1)})
            self._shown = (loss, bytes_per_s, mfu)
            self._window = (0, 0.0)
        else:
            self._window = (window_bytes, window_s)
        seconds_per_step = trainer.elapsed / max(trainer.step_count, 1)
        self.progress.update(
            result.step,
            self.budget.steps,
            self._shown[0],
            self._shown[1],
            self.budget.eta(trainer, seconds_per_step),
            logged=logged,
            bytes_per_position=self.bytes_per_position,
            mfu=self._shown[2],
            memory=peak_host_memory() if logged or self.progress.live else None,
        )

    def all_losses(self) -> tuple[float, ...]:
        import torch

        return tuple(torch.stack(self.losses).tolist()) if self.losses else ()


class Evaluator:
    """Validation bits per byte: on ``bytes`` of the split every ``every`` steps, on all of it
    at the end."""

    def __init__(
        self,
        text: Any,
        stack: SplitterStack,
        config: EvalSpec,
        *,
        context: int,
        batch_size: int,
        bytes_per_position: float = 1.0,
    ) -> None:
        self.bytes_per_position = bytes_per_position  # budgets are in bytes, rows in positions
        self.text = text
        self.stack = stack
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
        progress.message(
            f"step {step}: validation {result.bpb:.4f} bits per byte on the first {result.bytes:,} bytes "
            "of the validation split (the whole split at the end)"
        )

    def run(self, trainer: Trainer, limit_bytes: int | None = None, progress: Progress | None = None) -> Any:
        from aunet.jobs.inference.evaluate import evaluate

        # Every process evaluates the same rows (a sharded model needs all of them in each forward).
        if limit_bytes is not None:
            limit_bytes = math.ceil(limit_bytes / self.bytes_per_position)
        return evaluate(
            trainer.model,
            self.text.validation(self.stack, limit_bytes),
            context=self.context,
            batch_size=self.batch_size,
            limit_bytes=limit_bytes,
            autocast=trainer.autocast(),
            progress=progress,
        )


class Sampler:
    """The continuation of a fixed prompt printed at the end of a run."""

    def __init__(self, config: SampleSpec, seed: int) -> None:
        self.config = config
        self.seed = seed

    def sample(self, model: Any) -> bytes | None:
        from aunet.jobs.inference.generate import generate
        from aunet.jobs.runtime.devices import default_decode_threads

        if not self.config.bytes:
            return None
        device = next(model.parameters()).device
        # Decoding calls the model's parts directly: a sharded root gathers its own parameters first.
        sharded = hasattr(model, "unshard")
        if sharded:
            model.unshard()
        try:
            return generate(
                model,
                [self.config.prompt.encode()],
                self.config.bytes,
                temperature=self.config.temperature,
                top_k=self.config.top_k,
                seed=self.seed,
                threads=default_decode_threads(1, device),
            )[0]
        finally:
            if sharded:
                model.reshard()


#: Signals that stop a run with a checkpoint: Ctrl-C, a scheduler's or torchrun's SIGTERM (sent
#: before a SIGKILL), a closed terminal's SIGHUP.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: A second signal this soon after the first is the same request (a scheduler signals every
#: process of a job while torchrun forwards the same signal to its workers).
SAME_REQUEST_S = 1.0


class _StopFlag:
    """SIGINT, SIGTERM and SIGHUP set the flag: the loop stops after the step, with a checkpoint.
    A second Ctrl-C (SIGINT, a second or more later) interrupts at once; repeated SIGTERM or SIGHUP
    change nothing (the checkpoint is being written; SIGKILL remains). Once training is over (the
    last checkpoint written: ``trained``), any of them stops at once, since nothing can be lost.
    In a distributed run the processes agree on stopping (a small all-reduce on a gloo group, on
    the host), so that all stop at the same step."""

    def __init__(self, world: World) -> None:
        self.requested = False
        self.signum: int | None = None
        self.world = world
        self._group: Any = None
        self._previous: dict[int, Any] = {}
        self._when = 0.0
        self._done = False

    def agreed(self) -> bool:
        if not self.world.distributed:
            return self.requested
        import torch
        import torch.distributed as dist

        if self._group is None:
            self._group = dist.new_group(backend="gloo")
        flag = torch.tensor([self.signum if self.requested else 0])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._group)
        if int(flag.item()) and not self.requested:  # another process was signalled
            self.requested, self.signum = True, int(flag.item())
        return bool(flag.item())

    def trained(self) -> None:
        """Training is over and saved: a signal from now on stops at once."""
        self._done = True

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        now = time.monotonic()
        if self._done:
            raise KeyboardInterrupt
        if self.requested:
            if signum == signal.SIGINT and now - self._when > SAME_REQUEST_S:
                raise KeyboardInterrupt
            return
        self.requested, self.signum, self._when = True, signum, now

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        if kind is not None and self._previous and self.world.distributed:
            # An error is on its way out of this worker; torchrun answers the first worker that
            # exits by sending SIGTERM to the others, which must not kill them before they print
            # their own line. The process ends right after.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        self._previous = {}


def train(
    spec: Spec | None,
    *,
    data: str | Path | None,
    out: str | Path,
    steps: int | None = None,
    minutes: float | None = None,
    resume: bool = False,
    overrides: Sequence[str] = (),
    stop_at: int | None = None,
    device: Any = "auto",
    stream: IO[str] | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> RunSummary:
    """Train (or resume) a run; see the module docstring and ``aunet.jobs.train.resume`` for what a
    resume may change. ``overrides`` are ``--set`` items applied to the run's own spec on resume.
    Under torchrun with ``train.parallel`` set (``--parallel``), every process calls this
    (``aunet.jobs.runtime.distributed``). ``on_step(step, loss)`` is called after every step (it reads
    the loss back: for tests and notebooks, not for speed)."""
    run_dir = Path(out)
    check_out(run_dir)
    if resume:
        check_resumable(run_dir)
    visible = Progress(stream if stream is not None else sys.stderr)
    parallel = _parallel_of(spec, overrides, run_dir, resume)
    with process_group(parallel, device, resume=resume) as (world, placed), contextlib.ExitStack() as held:
        progress = visible if world.main else Progress(io.StringIO())
        # Claimed (created if need be, and locked) before anything looks inside: of several
        # processes started together on one --out, one goes on and the others are refused.
        claim = held.enter_context(RunClaim(run_dir)) if world.main else None
        world.barrier()
        if resume:
            start = resume_run(spec, list(overrides), data, run_dir, steps=steps, minutes=minutes, progress=progress)
        else:
            if overrides and spec is not None:
                spec = apply_overrides(spec, list(overrides))
            start = new_run(spec, data, run_dir)
        return _train(
            start,
            run_dir,
            claim,
            world,
            steps=steps,
            minutes=minutes,
            stop_at=stop_at,
            device=placed,
            progress=progress,
            on_step=on_step,
        )


def _parallel_of(spec: Spec | None, overrides: Sequence[str], run_dir: Path, resume: bool) -> Parallel:
    """``train.parallel`` of the spec this invocation will train (the run's own on a resume)."""
    if spec is None and resume:
        from aunet.jobs.runs.directory import read_run_spec

        try:
            spec = read_run_spec(run_dir)
        except AunetError:
            spec = None
    if spec is not None and overrides:
        try:
            spec = apply_overrides(spec, list(overrides))
        except AunetError:
            pass  # reported where the overrides are applied
    return spec.train.parallel if spec is not None else Parallel.NONE


def _train(
    start: RunStart,
    run_dir: Path,
    claim: RunClaim | None,
    world: World,
    *,
    steps: int | None,
    minutes: float | None,
    stop_at: int | None,
    device: Any,
    progress: Progress,
    on_step: Callable[[int, float], None] | None,
) -> RunSummary:
    import torch

    from aunet.core.accounting import account
    from aunet.core.model import build_model
    from aunet.jobs.runtime.devices import (
        check_fits,
        matmul_peak,
        peak_device_memory,
        peak_host_memory,
        trim_host_memory,
        use_bfloat16,
    )
    from aunet.jobs.train.profiling import RunProfile, format_summary

    spec = start.spec
    if start.record is None and (steps is not None or minutes is not None):
        spec = attrs.evolve(
            spec, train=attrs.evolve(spec.train, steps=steps, minutes=minutes if steps is None else None)
        )
    t = spec.train
    if t.steps is None and t.minutes is None:
        raise InputError("no budget: give --steps N or --minutes M (or train.steps / train.minutes in the spec)")
    check_available(t.metrics)  # a writer's library is missing: said before any work

    text = training_text(start.data, t.data, notify=progress.message)
    for notice in text.notices:
        progress.message(f"note: {notice}")
    if start.record is not None and start.record.fingerprint:
        changes = fingerprint_changes(start.record.fingerprint, text.fingerprint)
        if changes:
            raise InputError(
                f"--resume: the data changed since the run started ({text.source}: {'; '.join(changes[:3])}"
                f"{'; ...' if len(changes) > 3 else ''}); resume on the same data, or start a new run"
            )
    stack = spec.splitter_stack()
    if not text.has_validation():
        raise InputError(f"the validation split of {text.source} is empty; give more text")
    tokenizer = None
    if spec.model.bpe:
        tokenizer, spec = _bpe_tokenizer(start, run_dir, text, spec, progress)
        stack = TokenEncoding(tokenizer)
    if start.record is None:
        measured = contraction_of(text.contraction_levels(stack), spec.depth)
        spec = stamp(resolve_spec(spec, contraction=measured))
    check_fits(spec, device)
    bfloat16 = use_bfloat16(t.precision, device)
    problems = [
        f"levels[{i}].stage: {p}"
        for i, level in enumerate(spec.levels)
        for p in level.stage.training_problems(device=device, bfloat16=bfloat16)
    ]
    if problems:
        raise InputError("\n".join(problems))
    training_data = text.training(stack, context=spec.model.context, batch_size=t.batch_size, seed=t.seed)

    if world.main:
        checkpoint.check_writable(run_dir)
    world.barrier()
    progress.message(
        f"run directory: {run_dir}"
        + (f" ({world.size} processes, {world.parallel.value})" if world.distributed else "")
    )
    torch.manual_seed(t.seed)
    model = build_model(spec, device=device)
    model.tokenizer = tokenizer
    if tokenizer is not None and world.main:
        write_text(run_dir / TOKENIZER_FILE, tokenizer.to_json())
    trainer = Trainer(spec, model, data=training_data, device=device, world=world)
    if start.checkpoint is not None:
        for notice in _restore(trainer, start.checkpoint):
            progress.message(f"note: {notice}")
    base = start.record or RunRecord(text.path, text.fingerprint)
    record = attrs.evolve(base, fingerprint=text.fingerprint).with_entry(history_entry(start, trainer.step_count))
    if world.main:
        dropped = truncate_metrics(run_dir, trainer.step_count) if start.record is not None else 0
        if dropped:
            progress.message(
                f"note: dropped {dropped} record(s) of metrics.jsonl after step {trainer.step_count}, "
                "which this run writes again"
            )
        write_text(run_dir / RUN_FILE, json.dumps(record.to_json(), indent=1))
        write_text(run_dir / SPEC_FILE, dump_spec(spec))
        claim.started()

    budget = Budget(t)
    if t.steps is None and start.record is None:
        progress.message(
            f"note: the budget is {t.minutes:g} minutes of training time (train.minutes), not steps: the "
            "schedule follows the clock, so the run cannot be repeated exactly; give --steps N (or "
            "train.steps) for one that can"
        )
    checkpointer = Checkpointer(run_dir, t.checkpoint, spec, record, world, tokenizer=tokenizer, last=start.checkpoint)
    per_position = (spec.model.tokenizer.bytes_per_token or 1.0) if spec.model.bpe else 1.0
    evaluator = Evaluator(
        text, stack, t.eval, context=spec.model.context, batch_size=t.batch_size, bytes_per_position=per_position
    )
    interrupted = False
    purge = trainer.step_count + 1 if start.record is not None else None
    profile = RunProfile(run_dir, t.profile, device=device, step_bytes=t.batch_size * t.grad_accum * spec.model.context)
    flops_per_byte = account(spec).flops_per_byte
    peak_flops = matmul_peak(device.type, device.index, bfloat16)
    first = (trainer.step_count, trainer.elapsed, trainer.bytes_seen)
    with (
        _StopFlag(world) as stop,
        MetricWriters(run_dir, t.metrics, purge_step=purge, enabled=world.main, spec=spec) as writers,
    ):
        log = StepLog(
            writers,
            progress,
            budget,
            checkpointer,
            bytes_per_position=per_position,
            flops_per_byte=flops_per_byte,
            peak_flops=peak_flops,
            device=device,
        )
        while not budget.done(trainer):
            if stop.agreed() or (stop_at is not None and trainer.step_count >= stop_at):
                interrupted = True
                break
            result = profile.run(trainer, lambda: trainer.step(budget.fraction(trainer)))
            log.log(trainer, result)
            if (summary := profile.take()) is not None:
                progress.message(format_summary(summary))
            if on_step is not None:
                on_step(result.step, float(result.loss))
            final = budget.done(trainer)
            evaluator.maybe(trainer, writers, progress, final=final)
            checkpointer.maybe_save(trainer, final=final)
            if checkpointer.saved_step == trainer.step_count:
                writers.flush()  # a checkpoint's metrics are on disk with it
            if trainer.step_count % TRIM_EVERY == 0:
                trim_host_memory()
        profile.close()  # the run ended inside the window
        if (summary := profile.take()) is not None:
            progress.message(format_summary(summary))
        if trainer.step_count != checkpointer.saved_step:
            checkpointer.save(trainer)
        losses = log.all_losses()
        throughput = Throughput(
            trainer.step_count - first[0],
            trainer.elapsed - first[1],
            trainer.bytes_seen - first[2],
            flops_per_byte,
            peak_flops,
            peak_host_memory(),
            peak_device_memory(device),
        )
        train_bpb = losses[-1] / math.log(2) / per_position if losses else None
        ended = {"signal": stop.signum, "throughput": throughput, "train_bpb": train_bpb}
        if interrupted or stop.requested:  # a signal during the last step: saved, and stopped
            return RunSummary(
                run_dir, trainer.step_count, True, losses, None, None, 0, None, checkpointer.last, **ended
            )
        stop.trained()  # from here a signal stops at once: the checkpoint is written
        whole = t.eval.final_bytes is None
        what = (
            "the whole validation split" if whole else f"the first {t.eval.final_bytes:,} bytes of the validation split"
        )
        progress.message(
            f"trained {throughput.steps:,} steps in {duration(throughput.seconds)}; evaluating on {what} "
            f"of {text.source}"
        )
        result = evaluator.run(trainer, limit_bytes=t.eval.final_bytes, progress=progress)
        xz = text.xz_bpb(t.eval.final_bytes) if world.main else float("nan")
        writers.write(
            {
                "step": trainer.step_count,
                "val_bpb": result.bpb,
                "val_bytes": result.bytes,
                "xz_bpb": xz,
                "final": True,
                "whole_split": whole,
                "bytes_per_s": throughput.bytes_per_s,
                "flops_per_s": throughput.flops_per_s,
                "mfu": throughput.mfu,
                "peak_memory_bytes": peak_host_memory(),
            }
        )
        writers.scalars(trainer.step_count, {"val/bpb": result.bpb})
        sample = Sampler(t.sample, t.seed).sample(model)
    return RunSummary(
        run_dir,
        trainer.step_count,
        False,
        losses,
        result.bpb,
        xz,
        result.bytes,
        sample,
        checkpointer.last,
        val_whole=whole,
        prompt=t.sample.prompt.encode(),
        **ended,
    )


#: Steps between two returns of freed host memory to the system (``trim_host_memory``).
TRIM_EVERY = 10
TOKENIZER_FILE = "tokenizer.json"


def _bpe_tokenizer(start: RunStart, run_dir: Path, text: Any, spec: Spec, progress: Progress) -> tuple[Any, Spec]:
    """A BPE run's tokenizer: the one it trained (from its directory or checkpoint) when resumed,
    else one trained now on the training split; and the spec with its measured bytes per token."""
    from aunet.jobs.data.bpe import BpeTokenizer, bytes_per_token

    if text.streamed:
        raise InputError(
            "a BPE model reads its corpus whole (its tokenizer is trained on the training split "
            'first); set [train.data] stream = "off", or train a byte model on the stream'
        )
    if start.record is not None:
        if (run_dir / TOKENIZER_FILE).is_file():
            return BpeTokenizer.load(run_dir / TOKENIZER_FILE), spec
        if start.checkpoint is not None:
            meta = checkpoint.read_meta(start.checkpoint)
            if isinstance(meta.get("tokenizer"), dict):
                return BpeTokenizer.from_json(
                    json.dumps(meta["tokenizer"]), source=f"{start.checkpoint}/meta.json"
                ), spec
    size = spec.model.tokenizer.vocab_size
    progress.message(f"training a BPE tokenizer of {size:,} ids on the training split")
    tokenizer = BpeTokenizer.train((d.data for d in text.corpus.train), size)
    if spec.model.tokenizer.bytes_per_token is None:
        measured = bytes_per_token(tokenizer, (d.data for d in text.corpus.train))
        model = attrs.evolve(spec.model, tokenizer=attrs.evolve(spec.model.tokenizer, bytes_per_token=measured))
        spec = attrs.evolve(spec, model=model)
    return tokenizer, spec


def _restore(trainer: Trainer, path: Path) -> list[str]:
    """Load a checkpoint into the trainer, whatever wrote it (one process, DDP or FSDP with any
    number of processes) and however many processes read it."""
    meta = checkpoint.read_meta(path)
    try:
        if meta.get("format") == "sharded" and trainer.world.parallel is Parallel.FSDP:
            weights, tensors, _ = trainer.state()  # this process's shards, as the target
            target = {f"model.{k}": v for k, v in weights.items()} | {
                k: v for k, v in tensors.items() if k.startswith("optimizer.")
            }
            checkpoint.load_sharded_into(path, target)
            weights = {k.removeprefix("model."): v for k, v in target.items() if k.startswith("model.")}
            tensors = {k: v for k, v in target.items() if k.startswith("optimizer.")}
            return trainer.load_state(weights, tensors, checkpoint.read_trainer_json(path), full=False)
        weights, tensors, data = checkpoint.load_trainer(path)
        return trainer.load_state(weights, tensors, data, full=True)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise checkpoint.CheckpointError(
            f"checkpoint {path} does not fit the run's model: {str(exc).splitlines()[-1].strip()}"
        ) from None
