"""A run's spec: the model's spec (``aunet.core.spec``) and how ``aunet train`` trains it, the
``[train]`` table and its sub-tables, each read by one component of the job. The tables sit at
the foot of the job layer, below its rooms (a run's directory, its evaluation and its training
all read them), in a module that imports without torch:

* ``[train]`` itself: the recipe (batch, budget, optimizer, schedule, precision, seed), read by the
  trainer (``aunet.jobs.train.trainer``) and the schedule (``aunet.jobs.train.schedule``);
* ``[train.checkpoint]``: the checkpointer (``aunet.jobs.train.checkpointer``);
* ``[train.eval]`` and ``[train.sample]``: the evaluator and sampler (``aunet.jobs.train.evaluator``);
* ``[train.metrics]``: the metric writers (``aunet.jobs.train.metrics``);
* ``[train.profile]``: profiling (``aunet.jobs.train.profiling``);
* ``[train.data]``: the training text (``aunet.jobs.data.source``);
* ``parallel``: the process group (``aunet.jobs.runtime.distributed``).

Reading a spec stays light (``aunet spec check``, ``aunet split``). ``parse_spec``, ``load_spec`` and
``load_spec_with_overrides`` read a ``RunSpec`` with the same TOML and the same path-qualified
errors as ``aunet.core.convert``'s, which read a model's ``Spec``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import attrs

from aunet.core import convert
from aunet.core import overrides as overrides_module
from aunet.core.errors import SpecIssue
from aunet.core.registry import Registry
from aunet.core.spec import OMIT_DEFAULT, Checkpointing, Precision, ShapeMode, Spec
from aunet.core.validators import MAX_COUNT, between, count, fraction, non_negative, positive, rows, seed
from aunet.core.writers import MetricWriterSpec, distinct_kinds


class Streaming(enum.Enum):
    """Whether ``--data`` is read whole or streamed (``aunet.jobs.data.streaming``)."""

    AUTO = "auto"  # stream folders and record files larger than 256 MiB on disk
    ON = "on"
    OFF = "off"


class Split(enum.Enum):
    """Which documents validate (``aunet.jobs.data.corpus``)."""

    FINAL = "final"  # i % 10 == 9: the split every reported number is measured on
    TUNING = "tuning"  # i % 10 == 4 from the training side; the final validation documents unused


@attrs.frozen(kw_only=True)
class DataSpec:
    """``[train.data]``: how the training text is read."""

    stream: Streaming = Streaming.AUTO
    """``auto`` streams folders and .jsonl/.parquet files over 256 MiB, ``on`` always, ``off``
    never (the corpus is then held in memory, at most 1/16 of the memory available)."""
    buffer_bytes: int = attrs.field(default=64 << 20, validator=between(1 << 10, 1 << 36))
    """Streaming: bytes of documents shuffled together (a window); memory is about 3x this."""
    split: Split = Split.FINAL
    """Which documents validate: ``final`` (documents i % 10 == 9, what reported numbers use) or
    ``tuning`` (i % 10 == 4 from the training side, the final ones left out: for choosing
    learning rates and other knobs without touching the final split)."""


class Parallel(enum.Enum):
    """How ``aunet train`` spreads over the processes ``torchrun`` starts."""

    NONE = "none"
    DDP = "ddp"  # every process holds the model; gradients are averaged
    FSDP = "fsdp"  # FSDP2: parameters, gradients and optimizer state sharded over the processes


@attrs.frozen(kw_only=True)
class CheckpointSpec:
    """``[train.checkpoint]``: when the checkpointer writes and how many it keeps."""

    every: int = attrs.field(default=250, validator=count)
    """Steps between checkpoints (one is also written at the end and on Ctrl-C)."""
    keep: int = attrs.field(default=3, validator=count)
    """Checkpoints kept (the oldest are removed once a newer one is safely written)."""


@attrs.frozen(kw_only=True)
class EvalSpec:
    """``[train.eval]``: the periodic evaluations on the validation split."""

    every: int = attrs.field(default=250, validator=count)
    """Steps between evaluations on ``bytes`` of the validation split."""
    bytes: int = attrs.field(default=65_536, validator=count)
    """Validation bytes of the periodic evaluations (the final one uses the whole split)."""
    batch_size: int | None = attrs.field(default=None, validator=rows)
    """Rows per evaluation forward (default: ``train.batch_size``)."""
    final_bytes: int | None = attrs.field(default=None, validator=count)
    """Validation bytes of the evaluation at the end of a run (default: the whole split)."""


@attrs.frozen(kw_only=True)
class MetricsSpec:
    """``[train.metrics]``: what the metric writers record and how often."""

    every: int = attrs.field(default=10, validator=count)
    """Steps between records of metrics.jsonl and TensorBoard (the only steps at which the
    loss is read back from the device)."""
    tensorboard: bool = True
    """Also write TensorBoard event files under ``tb/`` (the ``tensorboard`` writer; naming it in
    ``writers``, with options, takes this one's place)."""
    writers: tuple[MetricWriterSpec, ...] = attrs.field(
        default=(), validator=distinct_kinds, metadata={OMIT_DEFAULT: True}
    )
    """More metric writers, beside metrics.jsonl (always written): kinds (``["mlflow", "wandb"]``)
    or tables with options (``[{ kind = "wandb", project = "x" }]``), each kind once; ``aunet
    plugins`` lists them (``aunet.core.writers``)."""


@attrs.frozen(kw_only=True)
class SampleSpec:
    """``[train.sample]``: the continuation printed at the end of a run."""

    bytes: int = attrs.field(default=200, validator=between(0, 1 << 30))
    """Bytes of the closing sample (0: none)."""
    prompt: str = "And God said,"
    """Prompt of the closing sample."""
    temperature: float = attrs.field(default=0.7, validator=non_negative)
    """Sampling temperature (0 is greedy)."""
    top_k: int | None = attrs.field(default=40, validator=rows)
    """Sample among the k likeliest bytes (none: all)."""


@attrs.frozen(kw_only=True)
class ProfileSpec:
    """``[train.profile]``: profile a window of a run's steps into ``DIR/profile`` (traces for
    TensorBoard and Perfetto, and a per-stage table at the end of the window)."""

    start: int | None = attrs.field(default=None, validator=count)
    """First profiled step (none: no profiling). One warm-up step runs under the profiler first."""
    stop: int | None = attrs.field(default=None, validator=count)
    """Last profiled step (default: ``start``)."""


def _multipliers(instance: object, attribute: attrs.Attribute, value: tuple[float, ...]) -> None:
    for x in value:
        if not (x > 0 and x < float("inf")):
            raise ValueError(f"every multiplier must be positive and finite, got {x}")


@attrs.frozen(kw_only=True)
class TrainSpec:
    """How ``aunet train`` trains (docs/method.md section 6: AdamW, warmup then cosine, clipping).

    The keys of ``[train]`` itself are the recipe: what decides the trained weights (batch,
    budget, optimizer, schedule, precision, seed). The sub-tables belong to the job's other
    components (checkpointer, evaluator, metric writers, sampler) and change nothing the model
    learns.
    """

    #: Keys that moved into a sub-table (read in error messages).
    MOVED: ClassVar[dict[str, str]] = {
        "checkpoint_every": "train.checkpoint.every",
        "keep": "train.checkpoint.keep",
        "eval_every": "train.eval.every",
        "eval_bytes": "train.eval.bytes",
        "log_every": "train.metrics.every",
        "sample_bytes": "train.sample.bytes",
        "prompt": "train.sample.prompt",
    }

    batch_size: int = attrs.field(default=8, validator=rows)
    """Rows of ``model.context`` positions per micro-batch."""
    grad_accum: int = attrs.field(default=1, validator=rows)
    """Micro-batches per optimizer step."""
    steps: int | None = attrs.field(default=None, validator=count)
    """Budget in optimizer steps (wins over ``minutes``)."""
    decay_steps: int | None = attrs.field(default=None, validator=count)
    """Steps over which the cosine decays (default: ``steps``); later steps run at its final rate.
    Extending a finished run sets it to the old budget, so the schedule never jumps."""
    minutes: float | None = attrs.field(default=8.5, validator=positive)
    """Budget in minutes of training (evaluation and checkpoints excluded). The learning-rate
    schedule then follows elapsed time, so such runs are not bit-reproducible; use ``steps``."""
    lr: float = attrs.field(default=3e-3, validator=positive)
    """Peak learning rate."""
    level_lr: tuple[float, ...] = attrs.field(default=(), validator=_multipliers)
    """Per-level learning-rate multipliers (level 0 = bytes first, one per level; empty: all 1):
    a level's stages, and the pooler, upsampler and router that make it, train at ``lr`` times its
    multiplier (H-Net scales its stages' rates this way). The embeddings and head go with level 0."""
    min_lr_ratio: float = attrs.field(default=0.01, validator=fraction)
    """The cosine ends at this fraction of the peak (the paper: 1%)."""
    warmup: int = attrs.field(default=50, validator=between(0, MAX_COUNT))
    """Linear warmup, in optimizer steps."""
    weight_decay: float = attrs.field(default=0.1, validator=non_negative)
    """AdamW weight decay, on matrices only unless ``decay_all``."""
    decay_all: bool = False
    """Also decay norms and embeddings."""
    beta1: float = attrs.field(default=0.9, validator=fraction)
    beta2: float = attrs.field(default=0.95, validator=fraction)
    eps: float = attrs.field(default=1e-8, validator=positive)
    clip: float | None = attrs.field(default=0.2, validator=positive)
    """Clip the gradient norm to this (None: no clipping)."""
    seed: int = attrs.field(default=0, validator=seed)
    """Seeds the initialization and the data order (0 to 2^63 - 1)."""
    precision: Precision = Precision.AUTO
    """``auto`` (bfloat16 autocast on CUDA, float32 elsewhere), ``float32`` or ``bfloat16``."""
    compile: bool = False
    """torch.compile the model (needs ``shapes = "static"``)."""
    shapes: ShapeMode = ShapeMode.EAGER
    checkpoint: CheckpointSpec = attrs.field(factory=CheckpointSpec)
    eval: EvalSpec = attrs.field(factory=EvalSpec)
    metrics: MetricsSpec = attrs.field(factory=MetricsSpec)
    sample: SampleSpec = attrs.field(factory=SampleSpec)
    profile: ProfileSpec = attrs.field(factory=ProfileSpec)
    data: DataSpec = attrs.field(factory=DataSpec)
    parallel: Parallel = Parallel.NONE
    """``ddp`` or ``fsdp`` under torchrun (``--parallel``); the global batch (batch_size x
    grad_accum rows) is the same whatever the number of processes."""
    activation_checkpointing: Checkpointing = Checkpointing.NONE
    """Recompute transformer blocks in the backward pass: ``selective`` (every second) or ``full``."""


@attrs.frozen(kw_only=True)
class RunSpec(Spec):
    """A spec as ``aunet train`` reads it: the model's spec and how to train it."""

    train: TrainSpec = attrs.field(factory=TrainSpec)
    """How ``aunet train`` trains it."""
    stamp: Mapping[str, str] = attrs.field(factory=dict)
    """Package and plugin versions, written into a run directory's resolved spec (after
    ``[train]``, where a spec file has always had it)."""

    def check_model(self) -> list[SpecIssue]:
        """Every problem that stops the model from being built or trained, each with its path."""
        issues = super().check_model()
        if self.train.compile and self.train.shapes is not ShapeMode.STATIC:
            issues.append(SpecIssue("train.shapes", 'torch.compile needs static shapes; set shapes = "static"'))
        profile = self.train.profile
        if profile.stop is not None and profile.start is None:
            issues.append(SpecIssue("train.profile.start", f"missing; stop = {profile.stop} needs a first step"))
        elif profile.stop is not None and profile.stop < profile.start:
            issues.append(SpecIssue("train.profile.stop", f"{profile.stop} comes before start = {profile.start}"))
        if self.train.level_lr and len(self.train.level_lr) != len(self.levels):
            issues.append(
                SpecIssue(
                    "train.level_lr",
                    f"{len(self.train.level_lr)} multipliers for {len(self.levels)} levels; give one per level, "
                    "bytes first",
                )
            )
        return issues


def parse_spec(text: str, *, source: str = "<spec>", registry: Registry | None = None, name: str = "") -> RunSpec:
    """A run's spec from TOML text (``aunet.core.convert.parse_spec``, with ``[train]``)."""
    return convert.parse_spec(text, source=source, registry=registry, name=name, cls=RunSpec)


def load_spec(path: str | Path, *, registry: Registry | None = None) -> RunSpec:
    """A run's spec from a file or a shipped spec's name (``aunet.core.convert.load_spec``)."""
    return convert.load_spec(path, registry=registry, cls=RunSpec)


def load_spec_with_overrides(
    path: str | Path, overrides: Sequence[str], *, registry: Registry | None = None
) -> RunSpec:
    """A run's spec from a file with ``--set`` overrides applied, problems at their source."""
    return overrides_module.load_spec_with_overrides(path, overrides, registry=registry, cls=RunSpec)


__all__ = [
    "CheckpointSpec",
    "DataSpec",
    "EvalSpec",
    "MetricsSpec",
    "Parallel",
    "ProfileSpec",
    "RunSpec",
    "SampleSpec",
    "Split",
    "Streaming",
    "TrainSpec",
    "load_spec",
    "load_spec_with_overrides",
    "parse_spec",
]
