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
``metrics.jsonl``, TensorBoard (``tb/``) and the other ``[train.metrics] writers``, checkpoints to
``checkpoints/``
(``aunet.jobs.train.checkpointer``, in the format of ``aunet.jobs.runs.checkpoint``). A run is set
up once (``_prepare``: data, encoding, the spec resolved with the data's contraction, model,
trainer, a resume's checkpoint loaded) and then driven (``_loop``).

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
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import attrs
import torch

from aunet.core.accounting import account
from aunet.core.contraction import contraction_of
from aunet.core.convert import dump_spec
from aunet.core.encoding import Encoding
from aunet.core.errors import InputError
from aunet.core.model import build_model
from aunet.core.spec import Spec, resolve_spec
from aunet.jobs.data.corpus import fingerprint_changes
from aunet.jobs.data.encodings import TOKENIZER_FILE, training_encoding
from aunet.jobs.data.source import training_text
from aunet.jobs.runs import saving
from aunet.jobs.runs.directory import RUN_FILE, SPEC_FILE, RunClaim, RunRecord, check_out, stamp, truncate_metrics
from aunet.jobs.runtime.devices import (
    check_fits,
    matmul_peak,
    peak_device_memory,
    peak_host_memory,
    trim_host_memory,
    use_bfloat16,
)
from aunet.jobs.runtime.distributed import World, process_group
from aunet.jobs.runtime.files import write_text
from aunet.jobs.train.checkpointer import Checkpointer
from aunet.jobs.train.evaluator import Evaluator, Sampler
from aunet.jobs.train.metrics import MetricWriters, Progress, check_available
from aunet.jobs.train.profiling import RunProfile, format_summary
from aunet.jobs.train.resume import RunStart, check_resumable, history_entry, new_run, requested, resume_run
from aunet.jobs.train.schedule import TrainingBudget
from aunet.jobs.train.signals import StopFlag
from aunet.jobs.train.summary import RunSummary, Throughput, duration
from aunet.jobs.train.trainer import StepResult, Trainer, TrainingDiverged

__all__ = ["RunSummary", "TrainingDiverged", "train"]


class StepLog:
    """The training loop's metric writer: reads a step's figures back at logging steps only."""

    def __init__(
        self,
        writers: MetricWriters,
        progress: Progress,
        budget: TrainingBudget,
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
            for name in ("level_loss", "router_loss"):  # auxiliary losses, apart from the next-byte loss
                if name in figures:
                    record[name] = figures[name]
                    self.writers.scalars(result.step, {f"train/{name}": figures[name]})
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
        return tuple(torch.stack(self.losses).tolist()) if self.losses else ()


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
    wanted = requested(spec, list(overrides), run_dir, resume=resume)
    with process_group(wanted.parallel, device, resume=resume) as (world, placed), contextlib.ExitStack() as held:
        progress = visible if world.main else Progress(io.StringIO())
        # Claimed (created if need be, and locked) before anything looks inside: of several
        # processes started together on one --out, one goes on and the others are refused.
        claim = held.enter_context(RunClaim(run_dir)) if world.main else None
        world.barrier()
        if resume:
            start = resume_run(wanted, data, run_dir, steps=steps, minutes=minutes, progress=progress)
        else:
            start = new_run(wanted.spec, data, run_dir)
        # Every process has read the run directory before the first writes to it: a slow process
        # would otherwise find the first one's checkpoints/ and call the run an existing one.
        world.barrier()
        run = _prepare(start, run_dir, claim, world, steps=steps, minutes=minutes, device=placed, progress=progress)
        return _loop(run, stop_at=stop_at, on_step=on_step)


@attrs.frozen(eq=False)
class _Run:
    """Everything the loop drives, set up once (``_prepare``)."""

    run_dir: Path
    spec: Spec  # resolved, the measured figures in it
    text: Any  # ``aunet.jobs.data.source``'s MemoryText or StreamedText
    encoding: Encoding
    trainer: Trainer
    checkpointer: Checkpointer
    world: World
    device: Any
    progress: Progress
    resumed: bool


def _prepare(
    start: RunStart,
    run_dir: Path,
    claim: RunClaim | None,
    world: World,
    *,
    steps: int | None,
    minutes: float | None,
    device: Any,
    progress: Progress,
) -> _Run:
    """The run set up from its start: the data read, the encoding chosen, the spec resolved once
    (with the contraction measured on the training data), the model built, a resume's checkpoint
    loaded, the run directory's files written."""
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
    if not text.has_validation():
        raise InputError(f"the validation split of {text.source} is empty; give more text")
    encoding, spec = training_encoding(
        spec,
        None if text.streamed else text.corpus,
        run_dir=run_dir,
        meta=None if start.record is None else start.meta,
        notify=progress.message,
    )
    if start.record is None:
        measured = contraction_of(text.contraction_levels(encoding), spec.splitter_stack().depth)
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
    training_data = text.training(encoding, context=spec.model.context, batch_size=t.batch_size, seed=t.seed)

    if world.main:
        saving.check_writable(run_dir)
    world.barrier()
    progress.message(
        f"run directory: {run_dir}"
        + (f" ({world.size} processes, {world.parallel.value})" if world.distributed else "")
    )
    torch.manual_seed(t.seed)
    model = build_model(spec, device=device)
    if (saved := encoding.saved()) is not None and world.main:
        write_text(run_dir / TOKENIZER_FILE, json.dumps(saved))
    trainer = Trainer(spec, model, data=training_data, device=device, world=world)
    base = start.record or RunRecord(text.path, text.fingerprint)
    record = attrs.evolve(base, fingerprint=text.fingerprint)
    checkpointer = Checkpointer(run_dir, t.checkpoint, spec, record, world, encoding, resumed=start.checkpoint)
    for notice in checkpointer.load(trainer):
        progress.message(f"note: {notice}")
    record = record.with_entry(history_entry(start, trainer.step_count))
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
    if t.steps is None and start.record is None:
        progress.message(
            f"note: the budget is {t.minutes:g} minutes of training time (train.minutes), not steps: the "
            "schedule follows the clock, so the run cannot be repeated exactly; give --steps N (or "
            "train.steps) for one that can"
        )
    return _Run(run_dir, spec, text, encoding, trainer, checkpointer, world, device, progress, start.record is not None)


def _loop(run: _Run, *, stop_at: int | None, on_step: Callable[[int, float], None] | None) -> RunSummary:
    """Train until the budget is spent or a signal asks to stop; evaluate, sample and summarise."""
    spec, t, trainer, checkpointer, progress = run.spec, run.spec.train, run.trainer, run.checkpointer, run.progress
    budget = TrainingBudget(t)
    per_position = run.encoding.bytes_per_position
    evaluator = Evaluator(run.text, run.encoding, t.eval, context=spec.model.context, batch_size=t.batch_size)
    interrupted = False
    purge = trainer.step_count + 1 if run.resumed else None
    profile = RunProfile(
        run.run_dir, t.profile, device=run.device, step_bytes=t.batch_size * t.grad_accum * spec.model.context
    )
    flops_per_byte = account(spec).flops_per_byte
    peak_flops = matmul_peak(run.device.type, run.device.index, use_bfloat16(t.precision, run.device))
    first = (trainer.step_count, trainer.elapsed, trainer.bytes_seen)
    metrics = MetricWriters(run.run_dir, t.metrics, purge_step=purge, enabled=run.world.main, spec=spec)
    with StopFlag(run.world) as stop, metrics as writers:
        log = StepLog(
            writers,
            progress,
            budget,
            checkpointer,
            bytes_per_position=per_position,
            flops_per_byte=flops_per_byte,
            peak_flops=peak_flops,
            device=run.device,
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
            checkpointer.maybe_save(trainer)
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
            peak_device_memory(run.device),
        )
        train_bpb = losses[-1] / math.log(2) / per_position if losses else None
        ended = {"signal": stop.signum, "throughput": throughput, "train_bpb": train_bpb}
        if interrupted or stop.requested:  # a signal during the last step: saved, and stopped
            return RunSummary(
                run.run_dir, trainer.step_count, True, losses, None, None, 0, None, checkpointer.last, **ended
            )
        stop.trained()  # from here a signal stops at once: the checkpoint is written
        whole = t.eval.final_bytes is None
        what = (
            "the whole validation split" if whole else f"the first {t.eval.final_bytes:,} bytes of the validation split"
        )
        progress.message(
            f"trained {throughput.steps:,} steps in {duration(throughput.seconds)}; evaluating on {what} "
            f"of {run.text.source}"
        )
        result = evaluator.run(trainer, limit_bytes=t.eval.final_bytes, progress=progress)
        xz = run.text.xz_bpb(t.eval.final_bytes) if run.world.main else float("nan")
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
        sample = Sampler(t.sample, t.seed).sample(trainer.model, run.encoding)
    return RunSummary(
        run.run_dir,
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
