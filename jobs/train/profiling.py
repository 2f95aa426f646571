"""Profiling training steps: ``aunet profile`` (one run per attention backend) and
``[train.profile]`` / ``aunet train --profile-steps A:B`` (a window of a real run).

Steps run the trainer's own ``step()`` (forward, backward, optimizer) under ``torch.profiler``
with ``tensorboard_trace_handler``: each backend's ``*.pt.trace.json`` lands in ``DIR/<kind>``, so
``tensorboard --logdir DIR`` shows every backend in the PyTorch Profiler tab (torch-tb-profiler)
and the same files open in Perfetto (ui.perfetto.dev). The assembler's walk labels its stages
(``aunet.core.labels``: ``encoder.<i>``, ``pool.<i>``, ``trunk``, ``upsample.<i>``,
``decoder.<i>``, ``head``, ``loss``; the trainer adds ``backward`` and ``optimizer``), and the
summary gives the time per label per step, its share of the step, the peak memory allocated
during the profiled steps (the profiler's memory events; on CUDA the allocator's peak) and
bytes/s. CPU activity is recorded everywhere, CUDA activity on CUDA.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import attrs

from aunet.core.labels import labelled

#: The labels of one step, in the order the summary lists them.
LABEL_PREFIXES = ("encoder.", "pool.", "trunk", "upsample.", "decoder.", "head", "loss", "backward", "optimizer")


@attrs.frozen
class ProfileSummary:
    """One backend's profile: seconds per label per step, the step, peak memory, speed."""

    kind: str
    steps: int
    step_s: float
    labels: dict[str, float]  # label -> seconds per step (CPU time of its range; CUDA time too on CUDA)
    peak_bytes: int
    bytes_per_s: float
    trace_dir: str
    skipped: str | None = None

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


def _is_label(name: str) -> bool:
    return name.startswith(("encoder.", "pool.", "upsample.", "decoder.")) or name in LABEL_PREFIXES


def _peak_from_trace(folder: Path, device: Any) -> int:
    """The largest 'Total Allocated' of the profiler's memory events in the newest trace."""
    traces = sorted(folder.glob("*.pt.trace.json"), key=lambda p: p.stat().st_mtime)
    if not traces:
        return 0
    events = json.loads(traces[-1].read_text()).get("traceEvents", [])
    wanted = 1 if device.type == "cuda" else 0  # the profiler's device type: 0 CPU, 1 CUDA
    return max(
        (
            int(e["args"].get("Total Allocated", 0))
            for e in events
            if e.get("name") == "[memory]" and e.get("args", {}).get("Device Type") == wanted
        ),
        default=0,
    )


class StepProfiler:
    """``torch.profiler`` over ``warmup`` + ``active`` calls of ``step()``; summaries on ready."""

    def __init__(self, folder: Path, *, device: Any, warmup: int, active: int) -> None:
        import torch
        from torch.profiler import ProfilerActivity, profile, schedule, tensorboard_trace_handler

        self.folder = folder
        self.device = device
        self.active = active
        folder.mkdir(parents=True, exist_ok=True)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        writer = tensorboard_trace_handler(str(folder), worker_name=folder.name)
        self.averages: Any = None

        def ready(prof: Any) -> None:
            writer(prof)
            self.averages = prof.key_averages()

        self._profile = profile(
            activities=activities,
            schedule=schedule(wait=0, warmup=warmup, active=active, repeat=1),
            on_trace_ready=ready,
            profile_memory=True,
            record_shapes=False,
        )
        self._torch = torch
        self.step_seconds: list[float] = []

    def __enter__(self) -> StepProfiler:
        self._labels = labelled()
        self._labels.__enter__()
        self._profile.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._profile.__exit__(*exc)
        finally:
            self._labels.__exit__(*exc)

    def step(self, fn: Any) -> Any:
        """Run one step inside the profiler's schedule and time it (to the device's end)."""
        started = time.perf_counter()
        result = fn()
        if self.device.type == "cuda":
            self._torch.cuda.synchronize(self.device)
        self.step_seconds.append(time.perf_counter() - started)
        self._profile.step()
        return result

    def summary(self, kind: str, *, step_bytes: int) -> ProfileSummary:
        seconds = self.step_seconds[-self.active :]
        step_s = sum(seconds) / max(len(seconds), 1)
        labels: dict[str, float] = {}
        for event in self.averages or []:
            if _is_label(event.key):
                total_us = event.cpu_time_total
                if self.device.type == "cuda":
                    total_us = max(total_us, getattr(event, "device_time_total", 0.0))
                labels[event.key] = total_us / 1e6 / max(self.active, 1)
        peak = _peak_from_trace(self.folder, self.device)
        if self.device.type == "cuda":
            peak = max(peak, int(self._torch.cuda.max_memory_allocated(self.device)))
        order = {p: i for i, p in enumerate(LABEL_PREFIXES)}
        ordered = dict(
            sorted(labels.items(), key=lambda kv: (min(order[p] for p in order if kv[0].startswith(p)), kv[0]))
        )
        return ProfileSummary(
            kind, self.active, step_s, ordered, peak, step_bytes / step_s if step_s else 0.0, str(self.folder)
        )


def format_summary(summary: ProfileSummary) -> str:
    if summary.skipped:
        return f"{summary.kind}: skipped: {summary.skipped}"
    lines = [
        f"{summary.kind}: {summary.step_s * 1000:,.1f} ms per step, {summary.bytes_per_s / 1000:,.1f} kB/s, peak "
        f"memory {summary.peak_bytes / 2**20:,.1f} MiB ({summary.steps} profiled steps; traces in "
        f"{summary.trace_dir})",
        f"  {'label':<14} {'ms/step':>10} {'share':>7}",
    ]
    for name, seconds in summary.labels.items():
        share = seconds / summary.step_s if summary.step_s else 0.0
        lines.append(f"  {name:<14} {seconds * 1000:>10,.2f} {100 * share:>6.1f}%")
    return "\n".join(lines)


def profile_backends(
    spec: Any,
    *,
    kinds: list[str],
    device: Any,
    context: int | None,
    batch: int | None,
    steps: int,
    warmup: int,
    out: Path,
    data: str | None = None,
) -> list[ProfileSummary]:
    """Profile training steps of ``spec`` with every stage on each attention kind in turn."""
    import torch

    from aunet.core.encoding import SplitterEncoding
    from aunet.core.model import build_model
    from aunet.core.overrides import apply_overrides
    from aunet.jobs.data.corpus import load_corpus
    from aunet.jobs.data.packing import TrainingData, encode_documents
    from aunet.jobs.runtime.devices import check_fits, use_bfloat16
    from aunet.jobs.train.trainer import Trainer

    overrides = ([f"model.context={context}"] if context else []) + ([f"train.batch_size={batch}"] if batch else [])
    base = apply_overrides(spec, overrides) if overrides else spec
    corpus = load_corpus(data)
    summaries = []
    for kind in kinds:
        chosen = apply_overrides(
            base, [f'levels[{i}].stage.attention={{ kind = "{kind}" }}' for i in range(len(base.levels))]
        )
        if kind == "flex" and device.type == "cuda":  # a compiled kernel per level length: keep lengths fixed
            chosen = apply_overrides(chosen, ["train.shapes=static"])
        bfloat16 = use_bfloat16(chosen.train.precision, device)
        problems = [
            p for level in chosen.levels for p in level.stage.training_problems(device=device, bfloat16=bfloat16)
        ]
        folder = out / kind
        if problems:
            summaries.append(ProfileSummary(kind, 0, 0.0, {}, 0, 0.0, str(folder), skipped=problems[0]))
            continue
        docs = encode_documents(corpus.train, SplitterEncoding(chosen.splitter_stack()))  # bytes, even for BPE
        torch.manual_seed(chosen.train.seed)
        try:
            model = build_model(chosen, device=device, contraction=None)
        except Exception as exc:
            from aunet.core.errors import AunetError

            if not isinstance(exc, AunetError):
                raise
            summaries.append(ProfileSummary(kind, 0, 0.0, {}, 0, 0.0, str(folder), skipped=str(exc)))
            continue
        check_fits(model.spec, device)
        data_stream = TrainingData(
            docs, context=chosen.model.context, batch_size=chosen.train.batch_size, seed=chosen.train.seed
        )
        trainer = Trainer(model.spec, model, data=data_stream, device=device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        with StepProfiler(folder, device=device, warmup=warmup, active=steps) as profiler:
            for _ in range(warmup + steps):
                profiler.step(lambda: trainer.step(0.5))
        step_bytes = chosen.train.batch_size * chosen.train.grad_accum * chosen.model.context
        summaries.append(profiler.summary(kind, step_bytes=step_bytes))
    return summaries


class RunProfile:
    """``[train.profile]``: profile steps ``start`` to ``stop`` of a real run into ``DIR/profile``
    (one warm-up step before, when there is one)."""

    def __init__(self, run_dir: Path, config: Any, *, device: Any, step_bytes: int) -> None:
        self.config = config
        self.folder = run_dir / "profile"
        self.device = device
        self.step_bytes = step_bytes
        self.profiler: StepProfiler | None = None
        self._done: ProfileSummary | None = None

    @property
    def enabled(self) -> bool:
        return self.config.start is not None

    def run(self, trainer: Any, step: Any) -> Any:
        """``step()`` for the trainer's next step, inside the profiler when it is in the window."""
        if not self.enabled:
            return step()
        nxt = trainer.step_count + 1
        start, stop = self.config.start, self.config.stop or self.config.start
        warmup = 1 if start > 1 else 0
        if self.profiler is None and nxt == start - warmup and nxt <= stop:
            self.profiler = StepProfiler(self.folder, device=self.device, warmup=warmup, active=stop - start + 1)
            self.profiler.__enter__()
        if self.profiler is None:
            return step()
        result = self.profiler.step(step)
        if nxt == stop:
            self.close()
        return result

    def close(self) -> None:
        """End the window (at its last step, or when the run ends inside it)."""
        if self.profiler is None:
            return
        profiler, self.profiler = self.profiler, None
        profiler.__exit__(None, None, None)
        self._done = profiler.summary("run", step_bytes=self.step_bytes)

    def take(self) -> ProfileSummary | None:
        """The window's summary once, when it has closed."""
        done, self._done = self._done, None
        return done
