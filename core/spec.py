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
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from aunet.core.components import PoolerSpec, RouterSpec, StageSpec, UpsamplerSpec
from aunet.core.contraction import embedded_contraction
from aunet.core.errors import SpecError, SpecIssue
from aunet.core.init import Init
from aunet.core.levels import SplitterStack
from aunet.core.registry import Family, Registry, default_registry
from aunet.core.splitter import Splitter
from aunet.core.tokens import VOCAB_SIZE
from aunet.core.validators import (
    MAX_BUCKETS,
    MAX_LEVELS,
    MAX_NGRAM,
    between,
    non_negative,
    positions,
    positive,
    width,
)

#: Field metadata: leave the field out of a dumped spec while it holds its default.
OMIT_DEFAULT = "aunet.omit_default"


@attrs.frozen(kw_only=True)
class LevelSpec:
    """One level of the hierarchy: level 0 is bytes, the last level is the trunk."""

    dim: int | None = attrs.field(default=None, validator=width)
    """Width of the level's vectors; poolers and upsamplers take theirs from here."""
    splitter: Splitter | None = None
    """Which bytes end a segment of this level (levels >= 1 only): a rule over the text."""
    router: RouterSpec | None = None
    """Or a router: the model decides the level's boundaries from the level below's encoder output
    (H-Net's dynamic chunking). A level has a splitter or a router; routed levels sit above every
    level with a splitter."""
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
    writes it into the resolved spec, so a checkpoint's shapes never depend on a corpus. A routed
    level's is the level below's times the router's target ratio."""
    skip: bool = True
    """Add this level's encoder output to its decoder's input (the U-Net's skip connection);
    false leaves the decoder only the upsampled coarse vectors, as the reference can. Levels
    below the last only: the trunk has no skip."""


class TokenizerKind(enum.Enum):
    """What the model reads: raw bytes (every AU-Net) or BPE tokens (the baseline)."""

    BYTES = "bytes"
    BPE = "bpe"


def _tokenizer_text(instance: object, attribute: attrs.Attribute, value: str) -> None:
    if value != "train" and not (value.startswith("embedded:") and len(value) > len("embedded:")):
        raise ValueError(
            f'must be "train" (the run\'s training split) or an embedded corpus, e.g. "embedded:en_pydoc"; got {value!r}'
        )


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
    trained_on: str = attrs.field(default="train", validator=_tokenizer_text)
    """The text the tokenizer learns its merges from (bpe): ``train``, the run's training split (an
    in-domain tokenizer), or a whole embedded corpus, e.g. ``embedded:en_pydoc`` (English prose
    from outside the Bible: an out-of-domain tokenizer, as a real model's tokenizer is)."""


def _ngram_sizes(instance: object, attribute: attrs.Attribute, value: tuple[int, ...]) -> None:
    if not value:
        raise ValueError("must name at least one n-gram length, e.g. [3, 4, 5, 6, 7, 8]")
    for n in value:
        if n < 2:
            raise ValueError(f"n-gram lengths start at 2 (1 is the byte embedding itself), got {n}")
        if n > MAX_NGRAM:
            raise ValueError(f"n-gram lengths are at most {MAX_NGRAM}, got {n}")
    if any(b <= a for a, b in itertools.pairwise(value)):
        raise ValueError(f"must be increasing without repeats, e.g. [3, 4, 5, 6, 7, 8]; got {list(value)}")


@attrs.frozen(kw_only=True)
class NgramSpec:
    """BLT's hash n-gram byte embeddings (Pagnoni et al. 2024, arXiv 2412.09871; docs/method.md
    section 11): position t's embedding adds, for every n in ``sizes``, a row of an n-gram table
    picked by a rolling hash of the n ids ending at t, and divides the sum by ``len(sizes) + 1``.
    An n-gram that would reach before the row or across a BOS adds nothing. Byte models only."""

    sizes: tuple[int, ...] = attrs.field(default=(3, 4, 5, 6, 7, 8), converter=tuple, validator=_ngram_sizes)
    """The n-gram lengths, increasing (BLT's: 3 to 8); one table each."""
    buckets: int = attrs.field(validator=between(1, MAX_BUCKETS, why="2^24 rows per table"))
    """Rows of each table: an n-gram's hash modulo ``buckets`` picks its row."""


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
    """Standard deviation of the byte embedding (and n-gram tables) and output head initialization
    (default dim ** -0.5)."""
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
    ngram: NgramSpec | None = None
    """Hash n-gram byte embeddings (BLT's), e.g. ``{ sizes = [3, 4, 5, 6, 7, 8], buckets = 4096 }``;
    none by default."""

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


class ShapeMode(enum.Enum):
    """How many segments each level keeps per row: in a forward (``AUNet.forward(shapes=...)``,
    static by default) and in training (``[train] shapes``, eager by default)."""

    STATIC = "static"  # fixed per row length: compiles; drops (and counts) what does not fit
    EAGER = "eager"  # the batch's largest row: drops nothing, shapes follow the data


class Checkpointing(enum.Enum):
    """Activation checkpointing of transformer blocks (recompute in the backward pass)."""

    NONE = "none"
    SELECTIVE = "selective"  # every second block
    FULL = "full"  # every block


@attrs.frozen(kw_only=True)
class Spec:
    """A whole hierarchy: its levels and how to build it. A run's spec adds how to train it
    (``aunet.jobs.config.RunSpec``: the ``[train]`` table and its sub-tables)."""

    name: str = ""
    """A name for humans and run directories; defaults to the file's stem."""
    model: ModelSpec = attrs.field(factory=ModelSpec)
    """Whole-network options."""
    levels: tuple[LevelSpec, ...] = ()
    """Level 0 (bytes) first; one table per level."""
    stamp: Mapping[str, str] = attrs.field(factory=dict)
    """Package and plugin versions, written into a run directory's resolved spec."""

    @property
    def depth(self) -> int:
        """L, the number of pooling levels."""
        return max(len(self.levels) - 1, 0)

    def splitter_stack(self) -> SplitterStack:
        """The splitters of the levels that have one (the levels below the routed ones)."""
        return SplitterStack(tuple(level.splitter for level in self.levels[1:] if level.splitter is not None))

    @property
    def routed(self) -> tuple[bool, ...]:
        """For levels 1..L, whether the level's boundaries come from a router."""
        return tuple(level.router is not None for level in self.levels[1:])

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
        if self.levels[0].router is not None:
            issues.append(
                SpecIssue(
                    "levels[0].router", "level 0 is the byte level and has no router; put the first router in levels[1]"
                )
            )
        for i, level in enumerate(self.levels[1:], start=1):
            if level.splitter is None and level.router is None:
                issues.append(
                    SpecIssue(
                        f"levels[{i}].splitter",
                        "missing; every level above the bytes needs a splitter or a router, "
                        'e.g. splitter = { kind = "whitespace" } or router = { kind = "dynamic" }',
                    )
                )
            elif level.splitter is not None and level.router is not None:
                issues.append(
                    SpecIssue(f"levels[{i}].router", "a level has a splitter or a router, not both; remove one")
                )
            elif level.splitter is not None and any(below.router is not None for below in self.levels[1:i]):
                issues.append(
                    SpecIssue(
                        f"levels[{i}].splitter",
                        "a level with a splitter cannot sit above a routed level (a rule over the text "
                        "cannot nest in boundaries the model chooses); put the routed levels on top",
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
        for i, level in enumerate(self.levels):
            if i and level.router is not None and self.levels[i - 1].dim is not None:
                issues.extend(level.router.check(path=f"levels[{i}].router", dim=self.levels[i - 1].dim))
        if self.model.level_loss > 0 and any(self.routed):
            issues.append(
                SpecIssue(
                    "model.level_loss",
                    "a level head predicts the levels splitters give; a routed level's come from its "
                    "router, so set level_loss = 0 for this spec",
                )
            )
        if self.model.bpe and len(self.levels) != 1:
            issues.append(
                SpecIssue(
                    "model.tokenizer.kind",
                    f"a BPE model is a flat token transformer (one level); "
                    f"this spec has {len(self.levels)} levels, which split bytes",
                )
            )
        if self.model.bpe and self.model.ngram is not None:
            issues.append(
                SpecIssue(
                    "model.ngram",
                    "hash n-gram embeddings extend the byte embedding; a BPE model's tokens are merged "
                    'byte n-grams already: drop ngram, or read bytes (tokenizer = { kind = "bytes" })',
                )
            )
        return issues


# -- defaults ------------------------------------------------------------------------------------


def resolve_spec(spec: Spec, *, registry: Registry | None = None, contraction: Sequence[float] | None = None) -> Spec:
    """The spec with defaults filled in: ``select`` poolers and ``multi-linear`` upsamplers on
    every level above the bytes that names none, and every level's ``contraction`` (bytes per
    segment): from the spec where it gives one, else ``contraction[i - 1]`` (measured by the
    caller on its training data, for the levels with splitters), else measured on the embedded
    corpus with the spec's own splitters (``aunet.core.contraction``); a routed level's is the
    level below's times its router's target ratio. A spec whose splitters do not stack gets no
    contraction; ``check_model`` reports why. A resolved spec comes back as it is, at no cost:
    the jobs resolve a spec once and hand it on."""
    if is_resolved(spec):
        return spec
    return _resolve(spec, registry or default_registry(), contraction)


def is_resolved(spec: Spec) -> bool:
    """Whether ``resolve_spec`` would change nothing: every level above the bytes names its
    pooler, upsampler and contraction, every component that takes an ``init`` has one, and every
    splitter is pinned."""
    for i, level in enumerate(spec.levels):
        if i and (level.pooler is None or level.upsampler is None or level.contraction is None):
            return False
        if level.splitter is not None and not level.splitter.is_pinned:
            return False
        if any(_with_init(c, spec.model.init) is not c for c in (level.stage, level.pooler, level.upsampler)):
            return False
    return True


def pin_splitters(spec: Spec) -> Spec:
    """The spec with every splitter pinned (``Splitter.pinned``: a model named by a run directory
    becomes that run's checkpoint and the SHA-256 of its weights), as a run's resolved spec records
    it; SpecError listing every splitter that cannot be. A run pins before it reads its data, so
    its levels come from the model its spec records."""
    if all(level.splitter is None or level.splitter.is_pinned for level in spec.levels):
        return spec
    levels, issues = [], []
    for i, level in enumerate(spec.levels):
        if level.splitter is not None and not level.splitter.is_pinned:
            try:
                level = attrs.evolve(level, splitter=level.splitter.pinned())
            except SpecError as exc:
                issues += [attrs.evolve(issue, path=f"levels[{i}].splitter.{issue.path}") for issue in exc.issues]
        levels.append(level)
    if issues:
        raise SpecError(issues)
    return attrs.evolve(spec, levels=tuple(levels))


def _resolve(spec: Spec, registry: Registry, contraction: Sequence[float] | None) -> Spec:
    spec = pin_splitters(spec)
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
        if contraction is None and any(levels[i].splitter is not None for i in missing):
            contraction = embedded_contraction(spec.splitter_stack())
        for i in missing:
            if levels[i].router is not None:  # routed levels sit above the splitters' (check_splitting)
                below = levels[i - 1].contraction if i > 1 else spec.model.bytes_per_position
                levels[i] = attrs.evolve(levels[i], contraction=round(below * levels[i].router.ratio, 4))
            else:
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
