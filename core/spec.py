"""Declarative specs: one TOML file describes a whole hierarchy (docs/method.md section 1).

A spec has one ``[[levels]]`` table per level of the hierarchy, level 0 (bytes) first; level i's
table holds everything that runs at level i: its width, its stage, and, from level 1 up, the
splitter that decides its boundaries and the pooler and upsampler that connect it to the level
below. Every pluggable slot is an inline table with a ``kind``::

    name = "aunet2-tiny"

    [[levels]]                      # level 0: bytes
    dim = 256
    stage = { kind = "transformer", layers = 2, head_dim = 64, window = 512 }

    [[levels]]                      # level 1: words
    dim = 512
    splitter = { kind = "whitespace" }
    stage = { kind = "transformer", layers = 6 }

Reading is strict: unknown keys, wrong types and unknown kinds are errors, all of them reported at
once, each with its path (``levels[1].splitter.kind: unknown splitter 'whitespce'; known: ...``).
The converter is built from a registry after plugins load, so third-party kinds work everywhere a
built-in does.
"""

from __future__ import annotations

import enum
import math
import re
import types
import typing
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import attrs
import cattrs
from cattrs.errors import AttributeValidationNote, ClassValidationError, IterableValidationError, IterableValidationNote

from aunet.core import toml
from aunet.core.components import AttentionSpec, ComponentSpec, PoolerSpec, StageSpec, UpsamplerSpec
from aunet.core.contraction import embedded_contraction
from aunet.core.errors import InputError, SpecError, SpecIssue, did_you_mean, known_list
from aunet.core.init import Init
from aunet.core.levels import SplitterStack
from aunet.core.registry import Family, Registry, default_registry
from aunet.core.splitter import Splitter
from aunet.core.tokens import VOCAB_SIZE
from aunet.core.validators import (
    FLOAT32_MAX,
    MAX_COUNT,
    MAX_LEVELS,
    between,
    count,
    fraction,
    non_negative,
    positions,
    positive,
    rows,
    seed,
    width,
)
from aunet.core.writers import MetricWriterSpec, distinct_kinds

#: Field metadata: leave the field out of a dumped spec while it holds its default.
OMIT_DEFAULT = "aunet.omit_default"


@attrs.frozen(kw_only=True)
class LevelSpec:
    """One level of the hierarchy: level 0 is bytes, the last level is the trunk."""

    dim: int | None = attrs.field(default=None, validator=width)
    """Width of the level's vectors; poolers and upsamplers take theirs from here."""
    splitter: Splitter | None = None
    """Which bytes end a segment of this level (levels >= 1 only)."""
    stage: StageSpec | None = None
    """The transformer stack run at this level (encoder and decoder alike; the trunk at the top)."""
    pooler: PoolerSpec | None = None
    """From the level below to this one (levels >= 1; default ``select``)."""
    upsampler: UpsamplerSpec | None = None
    """From this level back to the one below (levels >= 1; default ``multi-linear``)."""
    max_segments: int | None = attrs.field(default=None, validator=positions)
    """Static shape: segments of this level kept per row. Derived from the context and the
    contraction when unset; boundaries beyond it are counted as dropped, never silently."""
    contraction: float | None = attrs.field(default=None, validator=positive)
    """Bytes per segment of this level, for FLOPs accounting and static shapes. When unset, the
    trainer measures it on its training data (else it is measured on the embedded corpus) and
    writes it into the resolved spec, so a checkpoint's shapes never depend on a corpus."""
    skip: bool = True
    """Add this level's encoder output to its decoder's input (the U-Net's skip connection);
    false leaves the decoder only the upsampled coarse vectors, as the reference can. Levels
    below the last only: the trunk has no skip."""


class TokenizerKind(enum.Enum):
    """What the model reads: raw bytes (every AU-Net) or BPE tokens (the baseline)."""

    BYTES = "bytes"
    BPE = "bpe"


@attrs.frozen(kw_only=True)
class TokenizerSpec:
    """The model's input units. ``bpe``: a byte-level BPE tokenizer (Hugging Face ``tokenizers``)
    trained on the run's training split, saved with the run and every checkpoint; ids 0..255 stay
    the single bytes and 256..258 BOS, EOS and PAD, merges follow. A flat model only."""

    kind: TokenizerKind = TokenizerKind.BYTES
    vocab_size: int = attrs.field(default=4096, validator=between(260, 1 << 20))
    """Ids in all (bpe): the 256 bytes, BOS, EOS, PAD and vocab_size - 259 merges."""
    bytes_per_token: float | None = attrs.field(default=None, validator=positive)
    """Bytes per token (bpe), for FLOPs per byte: measured on the training data by the trainer
    and written into the resolved spec, else measured on the embedded corpus."""


@attrs.frozen(kw_only=True)
class ModelSpec:
    """What concerns the whole network rather than one level."""

    context: int = attrs.field(default=1024, validator=positions)
    """Positions per row (BOS and EOS included) the model is trained at; static shapes derive
    from it."""
    segment_margin: float = attrs.field(default=1.25, validator=positive)
    """Static shapes keep ceil(margin x expected segments) + 8 segments per row and level, the
    expectation coming from the level's contraction."""
    norm_eps: float = attrs.field(default=1e-5, validator=positive)
    """Epsilon of the final RMSNorm."""
    init_std: float | None = attrs.field(default=None, validator=positive)
    """Standard deviation of the byte embedding and output head initialization (default
    dim ** -0.5)."""
    init: Init = Init.SCALED
    """``scaled`` (0.02, residual outputs over sqrt(2 x layers)) or ``reference`` (fan_in ** -0.5,
    truncated at 3 sigmas: the authors' code); the default of every stage, pooler and upsampler
    that names none (``aunet.core.init``)."""
    doc_mask: bool = True
    """Keep attention within documents when rows pack several. The reference trains without
    (packed documents attend to each other); evaluation rows hold one document each."""
    level_loss: float = attrs.field(default=0.0, validator=non_negative)
    """Weight of an auxiliary loss on a head that predicts the next byte's level (the
    reference's ``lambda_level``); 0: no such head. Generation can then use it instead of the
    splitters (``aunet generate --levels predicted``)."""
    tokenizer: TokenizerSpec = attrs.field(factory=TokenizerSpec)
    """``{ kind = "bytes" }`` (default) or ``{ kind = "bpe", vocab_size = N }``: the BPE baseline."""

    @property
    def vocab_size(self) -> int:
        """Ids the embedding and the output head hold."""
        return self.tokenizer.vocab_size if self.tokenizer.kind is TokenizerKind.BPE else VOCAB_SIZE

    @property
    def bpe(self) -> bool:
        return self.tokenizer.kind is TokenizerKind.BPE

    @property
    def bytes_per_position(self) -> float:
        """The bytes one position stands for: 1 for bytes; the measured bytes per token for BPE
        (a SpecError before a run or ``aunet spec`` has measured it)."""
        if not self.bpe:
            return 1.0
        if self.tokenizer.bytes_per_token is None:
            raise SpecError(
                [SpecIssue("model.tokenizer.bytes_per_token", "not measured yet; a run measures it on its data")]
            )
        return self.tokenizer.bytes_per_token


class Precision(enum.Enum):
    """Training precision."""

    AUTO = "auto"  # bfloat16 autocast on CUDA, float32 elsewhere
    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"  # autocast: matrix products in bfloat16, master weights in float32


class Shapes(enum.Enum):
    """Segments kept per row during training (see ``aunet.core.model.ShapeMode``)."""

    STATIC = "static"  # fixed per row length: needed by torch.compile; drops are counted
    EAGER = "eager"  # the batch's largest row: drops nothing


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


class Streaming(enum.Enum):
    """Whether ``--data`` is read whole or streamed (``aunet.jobs.data.streaming``)."""

    AUTO = "auto"  # stream folders and record files larger than 256 MiB on disk
    ON = "on"
    OFF = "off"


@attrs.frozen(kw_only=True)
class DataSpec:
    """``[train.data]``: how the training text is read."""

    stream: Streaming = Streaming.AUTO
    """``auto`` streams folders and .jsonl/.parquet files over 256 MiB, ``on`` always, ``off``
    never (the corpus is then held in memory, at most 1/16 of the memory available)."""
    buffer_bytes: int = attrs.field(default=64 << 20, validator=between(1 << 10, 1 << 36))
    """Streaming: bytes of documents shuffled together (a window); memory is about 3x this."""


class Parallel(enum.Enum):
    """How ``aunet train`` spreads over the processes ``torchrun`` starts."""

    NONE = "none"
    DDP = "ddp"  # every process holds the model; gradients are averaged
    FSDP = "fsdp"  # FSDP2: parameters, gradients and optimizer state sharded over the processes


class Checkpointing(enum.Enum):
    """Activation checkpointing of transformer blocks (recompute in the backward pass)."""

    NONE = "none"
    SELECTIVE = "selective"  # every second block
    FULL = "full"  # every block


@attrs.frozen(kw_only=True)
class ProfileSpec:
    """``[train.profile]``: profile a window of a run's steps into ``DIR/profile`` (traces for
    TensorBoard and Perfetto, and a per-stage table at the end of the window)."""

    start: int | None = attrs.field(default=None, validator=count)
    """First profiled step (none: no profiling). One warm-up step runs under the profiler first."""
    stop: int | None = attrs.field(default=None, validator=count)
    """Last profiled step (default: ``start``)."""


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
    shapes: Shapes = Shapes.EAGER
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
class Spec:
    """A whole hierarchy: its levels and how to build and train it."""

    name: str = ""
    """A name for humans and run directories; defaults to the file's stem."""
    model: ModelSpec = attrs.field(factory=ModelSpec)
    """Whole-network options."""
    levels: tuple[LevelSpec, ...] = ()
    """Level 0 (bytes) first; one table per level."""
    train: TrainSpec = attrs.field(factory=TrainSpec)
    """How ``aunet train`` trains it."""
    stamp: Mapping[str, str] = attrs.field(factory=dict)
    """Package and plugin versions, written into a run directory's resolved spec."""

    @property
    def depth(self) -> int:
        """L, the number of pooling levels."""
        return max(len(self.levels) - 1, 0)

    def splitter_stack(self) -> SplitterStack:
        return SplitterStack(tuple(level.splitter for level in self.levels[1:] if level.splitter is not None))

    def check_splitting(self) -> list[SpecIssue]:
        """Problems that stop the spec from splitting text (what ``aunet split`` needs)."""
        issues = []
        if not self.levels:
            return [SpecIssue("levels", "no levels; add a [[levels]] table for the bytes and one per pooling level")]
        if len(self.levels) > MAX_LEVELS + 1:
            return [
                SpecIssue(
                    "levels",
                    f"{len(self.levels)} levels; at most {MAX_LEVELS + 1} (bytes and {MAX_LEVELS} pooling levels)",
                )
            ]
        if self.levels[0].splitter is not None:
            issues.append(
                SpecIssue(
                    "levels[0].splitter",
                    "level 0 is the byte level and has no splitter; put the first splitter in levels[1]",
                )
            )
        for i, level in enumerate(self.levels[1:], start=1):
            if level.splitter is None:
                issues.append(
                    SpecIssue(
                        f"levels[{i}].splitter",
                        'missing; every level above the bytes needs one, e.g. splitter = { kind = "whitespace" }',
                    )
                )
        numbers = [i for i, level in enumerate(self.levels) if i and level.splitter is not None]
        return issues + self.splitter_stack().check("levels", numbers)

    def check_model(self) -> list[SpecIssue]:
        """Every problem that stops a model from being built, each with its path."""
        issues = self.check_splitting()
        for i, level in enumerate(self.levels):
            path = f"levels[{i}]"
            if level.dim is None:
                issues.append(SpecIssue(f"{path}.dim", "missing; every level needs a width, e.g. dim = 256"))
            if level.stage is None:
                issues.append(SpecIssue(f"{path}.stage", 'missing; e.g. stage = { kind = "transformer", layers = 2 }'))
            elif level.dim is not None:
                issues.extend(level.stage.check(path=f"{path}.stage", dim=level.dim))
            if i == 0:
                for name in ("pooler", "upsampler", "max_segments", "contraction"):
                    if getattr(level, name) is not None:
                        issues.append(
                            SpecIssue(
                                f"{path}.{name}", f"level 0 is the byte level and has no {name.replace('_', ' ')}"
                            )
                        )
            if not level.skip and i == len(self.levels) - 1:
                issues.append(
                    SpecIssue(
                        f"{path}.skip",
                        "the last level is the trunk, which has no skip connection; "
                        "set skip = false on a level below it",
                    )
                )
            below = self.levels[i - 1].dim if i else None
            for name, dims in (
                ("pooler", {"dim_in": below, "dim_out": level.dim}),
                ("upsampler", {"dim_coarse": level.dim, "dim_fine": below}),
            ):
                component = getattr(level, name)
                if i and component is not None and None not in dims.values():
                    issues.extend(component.check(path=f"{path}.{name}", **dims))
        if self.model.bpe and len(self.levels) != 1:
            issues.append(
                SpecIssue(
                    "model.tokenizer.kind",
                    f"a BPE model is a flat token transformer (one level); "
                    f"this spec has {len(self.levels)} levels, which split bytes",
                )
            )
        if self.train.compile and self.train.shapes is not Shapes.STATIC:
            issues.append(SpecIssue("train.shapes", 'torch.compile needs static shapes; set shapes = "static"'))
        profile = self.train.profile
        if profile.stop is not None and profile.start is None:
            issues.append(SpecIssue("train.profile.start", f"missing; stop = {profile.stop} needs a first step"))
        elif profile.stop is not None and profile.stop < profile.start:
            issues.append(SpecIssue("train.profile.stop", f"{profile.stop} comes before start = {profile.start}"))
        return issues


# -- conversion ----------------------------------------------------------------------------------


#: How a spec file says None for a field whose default is something else (``clip = "none"``).
NONE = "none"


class _Invalid(ValueError):
    """A leaf problem found while structuring; ``key`` extends the path (an unknown key)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.key = key


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, (list, tuple)):
        return "an array"
    return repr(value)


def _strict_int(value: Any, _: type) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(f"expected int, got {_describe(value)}")
    return value


def _strict_float(value: Any, _: type) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Invalid(f"expected float, got {_describe(value)}")
    if isinstance(value, int) and abs(value) > FLOAT32_MAX:
        raise _Invalid(f"{value:.3g} is too large: above {FLOAT32_MAX:.3g}, the largest float32")
    value = float(value)
    if not math.isfinite(value):
        raise _Invalid(f"expected a finite number, got {value}")
    if abs(value) > FLOAT32_MAX:
        raise _Invalid(f"{value:.3g} is too large: above {FLOAT32_MAX:.3g}, the largest float32")
    return value


def _strict_str(value: Any, _: type) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"expected string, got {_describe(value)}")
    return value


def _strict_bool(value: Any, _: type) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"expected true or false, got {_describe(value)}")
    return value


def _optional_arg(tp: Any) -> Any | None:
    """X for ``X | None``, else None."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0]
    return None


_SLOT_FAMILIES = {
    Splitter: Family.SPLITTER,
    StageSpec: Family.STAGE,
    PoolerSpec: Family.POOLER,
    UpsamplerSpec: Family.UPSAMPLER,
    AttentionSpec: Family.ATTENTION,
    MetricWriterSpec: Family.METRIC_WRITER,
}


def slot_family(tp: Any) -> Family | None:
    return _SLOT_FAMILIES.get(tp)


class SpecConverter:
    """cattrs converter for specs, bound to the kinds of one registry."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        c = self.cattrs = cattrs.Converter(detailed_validation=True, forbid_extra_keys=True)
        c.register_structure_hook(int, _strict_int)
        c.register_structure_hook(float, _strict_float)
        c.register_structure_hook(str, _strict_str)
        c.register_structure_hook(bool, _strict_bool)
        c.register_structure_hook_func(lambda t: slot_family(t) is not None, self._structure_slot)
        c.register_structure_hook_func(lambda t: _optional_arg(t) is not None, self._structure_optional)
        c.register_structure_hook_func(_is_homogeneous_tuple, self._structure_tuple)
        c.register_structure_hook_func(_is_str_mapping, self._structure_mapping)
        c.register_structure_hook_func(lambda t: isinstance(t, type) and issubclass(t, enum.Enum), _structure_enum)
        c.register_structure_hook_factory(lambda t: attrs.has(t) and slot_family(t) is None, self._attrs_structure_fn)
        c.register_unstructure_hook_func(attrs.has, self._unstructure_attrs)
        c.register_unstructure_hook_func(lambda t: isinstance(t, type) and issubclass(t, enum.Enum), lambda e: e.value)

    # structure ---------------------------------------------------------------------------------

    def structure(self, data: Any, cls: type) -> Any:
        """Structure ``data`` (parsed TOML) into ``cls``; SpecError listing every problem."""
        try:
            return self.cattrs.structure(data, cls)
        except Exception as exc:
            issues = _issues(exc, "")
            if not issues:
                raise
            raise SpecError(issues) from None

    def _structure_optional(self, value: Any, tp: Any) -> Any:
        # TOML has no null: "none" spells None where the default is something else (clip = "none").
        if value is None or (isinstance(value, str) and value == NONE and _optional_arg(tp) is not str):
            return None
        return self.cattrs.structure(value, _optional_arg(tp))

    def _structure_tuple(self, value: Any, tp: Any) -> tuple:
        if not isinstance(value, (list, tuple)):
            raise _Invalid(f"expected an array, got {_describe(value)}")
        item_type = typing.get_args(tp)[0]
        out, errors = [], []
        for i, item in enumerate(value):
            try:
                out.append(self.cattrs.structure(item, item_type))
            except Exception as exc:  # noqa: BLE001
                exc.__notes__ = [*getattr(exc, "__notes__", []), IterableValidationNote(f"index {i}", i, item_type)]
                errors.append(exc)
        if errors:
            raise IterableValidationError("invalid items", errors, tp)
        return tuple(out)

    def _structure_mapping(self, value: Any, tp: Any) -> dict:
        if not isinstance(value, Mapping):
            raise _Invalid(f"expected a table, got {_describe(value)}")
        value_type = typing.get_args(tp)[1]
        return {str(k): self.cattrs.structure(v, value_type) for k, v in value.items()}

    def _structure_slot(self, value: Any, tp: Any) -> Any:
        family = slot_family(tp)
        if isinstance(value, str):
            value = {"kind": value}  # shorthand: splitter = "whitespace"
        if not isinstance(value, Mapping):
            raise _Invalid(f'expected a table with a kind, e.g. {{ kind = "..." }}, got {_describe(value)}')
        kinds = self.registry.kinds(family)
        kind = value.get("kind")
        if kind is None:
            raise _Invalid(f"missing; known {family.label} kinds: {known_list(kinds)}", key="kind")
        if not isinstance(kind, str):
            raise _Invalid(f"expected string, got {_describe(kind)}", key="kind")
        if kind not in kinds:
            raise _Invalid(
                f"unknown {family.label} '{kind}'; known: {known_list(kinds)}{did_you_mean(kind, kinds)}", key="kind"
            )
        rest = {k: v for k, v in value.items() if k != "kind"}
        return self.cattrs.structure(rest, kinds[kind].cls)

    def _attrs_structure_fn(self, cls: type) -> Callable[[Any, type], Any]:
        attrs.resolve_types(cls)
        fields = [f for f in attrs.fields(cls) if f.init]
        names = {f.alias or f.name: f for f in fields}

        def structure(value: Any, _: type) -> Any:
            if not isinstance(value, Mapping):
                raise _Invalid(f"expected a table, got {_describe(value)}")
            kwargs, errors = {}, []
            for key, item in value.items():
                field = names.get(key)
                if field is None:
                    moved = getattr(cls, "MOVED", {}).get(key)
                    if moved:
                        message = f"moved: this is now {moved}"
                    elif names:
                        hint = did_you_mean(str(key), names)
                        message = f"unknown key; known: {known_list(names)}{hint}"
                    else:
                        owner = f"'{cls.kind}'" if isinstance(getattr(cls, "kind", None), str) else cls.__name__
                        message = f"unknown key; {owner} takes no options"
                    errors.append(_Invalid(message, key=str(key)))
                    continue
                try:
                    kwargs[field.alias or field.name] = self.cattrs.structure(item, field.type)
                except Exception as exc:  # noqa: BLE001
                    exc.__notes__ = [*getattr(exc, "__notes__", []), AttributeValidationNote(key, key, field.type)]
                    errors.append(exc)
            for name, field in names.items():
                if name not in value and field.default is attrs.NOTHING:
                    errors.append(_Invalid("missing (required)", key=name))
            # Every value that was read is checked, even when others were not: one round of errors.
            for name, item in kwargs.items():
                field = names[name]
                if field.validator is None:
                    continue
                try:
                    field.validator(None, field, item)
                except (ValueError, TypeError) as exc:
                    errors.append(_Invalid(str(exc), key=name))
            if errors:
                raise ClassValidationError(f"invalid {cls.__name__}", errors, cls)
            with attrs.validators.disabled():  # checked above, each with its own message
                return cls(**kwargs)

        return structure

    # unstructure -------------------------------------------------------------------------------

    def unstructure(self, obj: Any) -> Any:
        return self.cattrs.unstructure(obj)

    def _unstructure_attrs(self, obj: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        kind = getattr(type(obj), "kind", None)
        if isinstance(obj, (ComponentSpec, Splitter)) and isinstance(kind, str):
            out["kind"] = kind
        for field in attrs.fields(type(obj)):
            if not field.init:
                continue
            value = getattr(obj, field.name)
            if field.metadata.get(OMIT_DEFAULT) and value == field.default:
                continue  # an option added later: specs that do not use it dump as they did
            if value is None:
                if field.default is not None and field.default is not attrs.NOTHING:
                    out[field.alias or field.name] = NONE  # None that is not the default
                continue  # TOML has no null: absent means the default
            out[field.alias or field.name] = self._unstructure_value(value)
        return out

    def _unstructure_value(self, value: Any) -> Any:
        if isinstance(value, (tuple, list)):
            return [self._unstructure_value(v) for v in value]
        if isinstance(value, Mapping):
            return {k: self._unstructure_value(v) for k, v in value.items()}
        return self.cattrs.unstructure(value)


def _is_homogeneous_tuple(tp: Any) -> bool:
    args = typing.get_args(tp)
    return typing.get_origin(tp) is tuple and len(args) == 2 and args[1] is Ellipsis


def _is_str_mapping(tp: Any) -> bool:
    from collections import abc

    return typing.get_origin(tp) in (dict, abc.Mapping, typing.Mapping) and typing.get_args(tp)[:1] == (str,)


def _structure_enum(value: Any, tp: type[enum.Enum]) -> enum.Enum:
    try:
        return tp(value)
    except ValueError:
        known = [str(m.value) for m in tp]
        raise _Invalid(
            f"expected one of {', '.join(known)}, got {_describe(value)}{did_you_mean(str(value), known)}"
        ) from None


def _issues(exc: BaseException, path: str) -> list[SpecIssue]:
    """Path-qualified issues from the exception tree a structure call raised."""
    if isinstance(exc, (ClassValidationError, IterableValidationError)):
        out = []
        for sub in exc.exceptions:
            notes = [
                n
                for n in getattr(sub, "__notes__", [])
                if isinstance(n, (AttributeValidationNote, IterableValidationNote))
            ]
            sub_path = path
            for note in notes[-1:]:
                if isinstance(note, AttributeValidationNote):
                    sub_path = _join(path, note.name)
                else:
                    sub_path = f"{path}[{note.index}]"
            out.extend(_issues(sub, sub_path))
        return out
    if isinstance(exc, _Invalid):
        return [SpecIssue(_join(path, exc.key) if exc.key else path, exc.message)]
    if isinstance(exc, (ValueError, TypeError)):
        return [SpecIssue(path, str(exc))]
    return []


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# -- files ---------------------------------------------------------------------------------------


_CONVERTERS: weakref.WeakKeyDictionary[Registry, tuple[int, SpecConverter]] = weakref.WeakKeyDictionary()


def converter(registry: Registry | None = None) -> SpecConverter:
    """The spec converter for the kinds ``registry`` holds now (rebuilt after a registration:
    cattrs does not see kinds registered after a converter is made)."""
    registry = registry or default_registry()
    cached = _CONVERTERS.get(registry)
    if cached is None or cached[0] != registry.generation:
        cached = _CONVERTERS[registry] = (registry.generation, SpecConverter(registry))
    return cached[1]


def _parse_toml(text: str, *, source: str) -> dict[str, Any]:
    try:
        return toml.loads(text)
    except toml.TOMLDecodeError as exc:
        raise SpecError([SpecIssue("", f"invalid TOML: {exc}")], source=source) from None
    except RecursionError:
        raise SpecError(
            [SpecIssue("", "invalid TOML: nested too deeply for the parser; a spec nests a few tables deep")],
            source=source,
        ) from None
    except ValueError as exc:  # a number beyond what Python converts (an integer of 5,000 digits)
        why = "an integer of more digits than Python converts (4,300)" if "digits" in str(exc) else str(exc)
        raise SpecError([SpecIssue("", f"invalid TOML: {why}")], source=source) from None


def parse_spec(text: str, *, source: str = "<spec>", registry: Registry | None = None, name: str = "") -> Spec:
    """Structure a spec from TOML text; SpecError listing every problem."""
    data = _parse_toml(text, source=source)
    try:
        spec = converter(registry).structure(data, Spec)
    except SpecError as exc:
        raise SpecError(exc.issues, source=source) from None
    if not spec.name and name:
        spec = attrs.evolve(spec, name=name)
    return spec


def spec_file(path: str | Path) -> Path:
    """The file a ``--spec`` argument names: a path, or else a shipped spec by name
    (``aunet3-tiny``, ``paper/aunet2-1b``, also ``specs/aunet3-tiny.toml`` from any directory)."""
    from aunet.core.resources import shipped_spec_names, spec_path

    p = Path(path)
    if p.exists():
        return p
    name = str(path).removeprefix("specs/").removesuffix(".toml")
    if name in shipped_spec_names():
        return spec_path(name)
    raise InputError(
        f"spec file '{path}' does not exist, and no shipped spec is named '{name}'; shipped: "
        f"{known_list(shipped_spec_names())}{did_you_mean(name, shipped_spec_names())}"
    )


def load_spec(path: str | Path, *, registry: Registry | None = None) -> Spec:
    """Read and structure a spec file, or a shipped spec by name (``load_spec("aunet3-tiny")``).
    Raises InputError for an unreadable file and SpecError (with every problem and its path) for
    a bad spec."""
    path = spec_file(path)
    return parse_spec(_read_spec_text(path), source=str(path), registry=registry, name=path.stem)


def _read_spec_text(path: Path) -> str:
    if path.is_dir():
        raise InputError(f"spec file '{path}' is a directory; give a .toml file")
    if not path.is_file():
        raise InputError(f"spec file '{path}' is not a regular file (a device or a pipe); give a .toml file")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise InputError(f"cannot read spec file '{path}': {exc.strerror or exc}") from None
    if len(raw) > MAX_SPEC_BYTES:
        raise InputError(f"spec file '{path}' is larger than {MAX_SPEC_BYTES // 1024} KiB; a spec is a small TOML file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"spec file '{path}' is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


#: A spec file is read only up to this size (``aunet spec check /dev/zero`` must not read forever).
MAX_SPEC_BYTES = 1 << 20


def resolve_spec(spec: Spec, *, registry: Registry | None = None, contraction: Sequence[float] | None = None) -> Spec:
    """The spec with defaults filled in: ``select`` poolers and ``multi-linear`` upsamplers on
    every level above the bytes that names none, and every level's ``contraction`` (bytes per
    segment): from the spec where it gives one, else ``contraction[i - 1]`` (measured by the
    caller on its training data), else measured on the embedded corpus with the spec's own
    splitters (``aunet.core.contraction``). A spec whose splitters do not stack gets no
    contraction; ``check_model`` reports why. A resolved spec comes back as it is, at no cost:
    the jobs resolve a spec once and hand it on."""
    if is_resolved(spec):
        return spec
    return _resolve(spec, registry or default_registry(), contraction)


def is_resolved(spec: Spec) -> bool:
    """Whether ``resolve_spec`` would change nothing: every level above the bytes names its
    pooler, upsampler and contraction, and every component that takes an ``init`` has one."""
    for i, level in enumerate(spec.levels):
        if i and (level.pooler is None or level.upsampler is None or level.contraction is None):
            return False
        if any(_with_init(c, spec.model.init) is not c for c in (level.stage, level.pooler, level.upsampler)):
            return False
    return True


def _resolve(spec: Spec, registry: Registry, contraction: Sequence[float] | None) -> Spec:
    levels = []
    for i, level in enumerate(spec.levels):
        for name, family, kind in (
            ("pooler", Family.POOLER, DEFAULT_POOLER),
            ("upsampler", Family.UPSAMPLER, DEFAULT_UPSAMPLER),
        ):
            if i and getattr(level, name) is None:
                try:
                    level = attrs.evolve(level, **{name: registry.lookup(family, kind).cls()})
                except KeyError as exc:
                    raise SpecError(
                        [SpecIssue(f"levels[{i}].{name}", f"none given and the default {exc.args[0]}")]
                    ) from None
        level = attrs.evolve(
            level,
            **{name: _with_init(getattr(level, name), spec.model.init) for name in ("stage", "pooler", "upsampler")},
        )
        levels.append(level)
    missing = [i for i, level in enumerate(levels) if i and level.contraction is None]
    if missing and not spec.check_splitting():
        if contraction is None:
            contraction = embedded_contraction(spec.splitter_stack())
        for i in missing:
            levels[i] = attrs.evolve(levels[i], contraction=float(contraction[i - 1]))
    return attrs.evolve(spec, levels=tuple(levels))


DEFAULT_POOLER = "select"
DEFAULT_UPSAMPLER = "multi-linear"


def _with_init(component: Any, init: Init) -> Any:
    """The component with the model's ``init`` where it has an ``init`` option and names none
    (third-party components without one are left alone)."""
    if component is None or not attrs.has(type(component)):
        return component
    names = {f.name for f in attrs.fields(type(component))}
    if "init" in names and component.init is None:
        return attrs.evolve(component, init=init)
    return component


def spec_to_dict(spec: Spec, *, registry: Registry | None = None) -> dict[str, Any]:
    return converter(registry).unstructure(spec)


def dump_spec(spec: Spec, *, registry: Registry | None = None) -> str:
    """The spec as TOML; ``parse_spec(dump_spec(s)) == s``."""
    return toml.dumps(spec_to_dict(spec, registry=registry))


def apply_overrides(spec: Spec, overrides: Sequence[str], *, registry: Registry | None = None) -> Spec:
    """``--set key=value``: dotted paths into the spec (``train.lr=1e-3``,
    ``levels[1].stage.layers=6``); values are TOML (strings may be bare). Problems name the
    ``--set`` that caused them."""
    return _structure_with_overrides(
        spec_to_dict(spec, registry=registry), overrides, source="--set", registry=registry, name=spec.name
    )


def override_sources(overrides: Sequence[str]) -> dict[str, str]:
    """``{path: "--set path=value"}`` for attributing a spec's problems to the override behind them."""
    out = {}
    for item in overrides:
        key, sep, _ = item.partition("=")
        if sep and key.strip():
            out[key.strip()] = f"--set {item.strip()}"
    return out


def attribute(issues: Sequence[SpecIssue], sources: Mapping[str, str]) -> list[SpecIssue]:
    """The issues, each whose path is under (or above) an overridden key named at that ``--set``."""
    out = []
    for issue in issues:
        for key, source in sources.items():
            if _related(issue.path, key):
                issue = attrs.evolve(issue, source=source)
                break
        out.append(issue)
    return out


def _related(path: str, key: str) -> bool:
    def under(a: str, b: str) -> bool:
        return a == b or a.startswith((b + ".", b + "["))

    return under(path, key) or under(key, path)


def _structure_with_overrides(
    data: dict[str, Any], overrides: Sequence[str], *, source: str, registry: Registry | None, name: str
) -> Spec:
    issues = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            issues.append(SpecIssue("", f"'{item}' is not key=value (e.g. train.lr=1e-3)", source="--set"))
            continue
        try:
            value = toml.loads(f"v = {raw}")["v"]
        except (toml.TOMLDecodeError, ValueError, RecursionError):
            value = raw  # a bare string
        problem = _assign(data, key, value)
        if problem:
            issues.append(SpecIssue(key, problem, source=f"--set {item.strip()}"))
    sources = override_sources(overrides)
    try:
        spec = converter(registry).structure(data, Spec)
    except SpecError as exc:
        issues.extend(attribute(exc.issues, sources))
    if issues:
        raise SpecError(issues, source=source)
    return spec if spec.name or not name else attrs.evolve(spec, name=name)


def load_spec_with_overrides(path: str | Path, overrides: Sequence[str], *, registry: Registry | None = None) -> Spec:
    """``load_spec`` with ``--set`` overrides applied to the file's TOML before it is read, so that
    every problem of both is reported at once, each at its source (the file, or the ``--set``)."""
    if not overrides:
        return load_spec(path, registry=registry)
    path = spec_file(path)
    text = _read_spec_text(path)
    data = _parse_toml(text, source=str(path))
    return _structure_with_overrides(data, overrides, source=str(path), registry=registry, name=path.stem)


def _assign(data: dict[str, Any], key: str, value: Any) -> str | None:
    parts = re.findall(r"[^.\[\]]+|\[\d+\]", key)
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part.startswith("["):
            index = int(part[1:-1])
            if not isinstance(node, list) or index >= len(node):
                return f"index {index} is out of range ({len(node) if isinstance(node, list) else 0} entries)"
            if last:
                node[index] = value
            else:
                node = node[index]
        else:
            if not isinstance(node, dict):
                return f"'{part}' does not name a table"
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
    return None
