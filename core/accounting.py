"""Parameters and FLOPs per byte of a spec, without building it (docs/method.md section 7).

The paper's accounting: one stack costs 6 x (non-embedding parameters) + 6 x dim x layers x S
FLOPs per position (forward and backward), S the attended length (the stage's share of the
context, or its window); an AU-Net's FLOPs per byte sum each stack's FLOPs divided by k_i, the
bytes per position at its level (1 for bytes). That sum covers the stacks only. We also report the
poolers, upsamplers and output head, which the paper's figure leaves out, as ``flops_per_byte_all``.
Hash n-gram tables (``model.ngram``) are embedding parameters, counted apart
(``ngram_embeddings``): nothing in the paper's figure; in ``flops_per_byte_all`` their sums, 3 x
len(sizes) x d_0 per byte (adding len(sizes) rows of d_0 in the forward, twice that in the
backward, which also scatters each row's gradient into its table).
A splitter that reads bytes through a model (BLT's entropy patches) adds that model's forward per
byte to both (``forward_flops_per_byte``: 2 x its non-embedding parameters + 2 x dim x layers x S +
its output head; no backward, it is frozen), as ``splitter_flops_per_byte``.

Beside it, the reference's estimator (``reference_flops_per_byte``: Lingua's 3.5 x 4 x layers x S x
dim / 2 attention term, every stack and every component's parameters counted) and a training
memory estimate per device size (``MemoryEstimate``): weights, gradients and AdamW state at 16
bytes per parameter (18 under bfloat16 autocast, its weight copies), plus the activations one row
keeps for backward at the static capacities, from each stage's own per-position formula.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs
import numpy as np

from aunet.core.spec import Checkpointing, Precision, Spec, resolve_spec


def level_contraction(spec: Spec) -> tuple[float, ...]:
    """(k_0, k_1, ..., k_L): bytes per position at every level of a resolved spec; k_0 is 1 for
    bytes, the measured bytes per token for a BPE model."""
    return (spec.model.bytes_per_position, *(level.contraction for level in spec.levels[1:]))


@attrs.frozen
class Accounting:
    """Sizes of one spec."""

    parameters_by_component: dict[str, int]
    contraction: tuple[float, ...]  # bytes per position at levels 0..L
    contraction_measured: bool  # some k_i were measured on the embedded corpus
    context: int  # positions per row: bytes, or tokens for a BPE model (``tokens``)
    flops_per_byte: float  # the paper's accounting: stacks only
    flops_per_byte_all: float  # plus poolers, upsamplers, the output head and n-gram sums

    reference_flops_per_byte: float | None = None  # the reference's estimator (None: a stage gives none)
    memory: tuple[MemoryEstimate, ...] = ()  # per precision and checkpointing mode
    memory_unknown: tuple[str, ...] = ()  # components with no activation formula (estimates omit them)
    flops_per_byte_packed: float | None = None  # the paper's formula with attention per document and window
    tokens: bool = False  # level 0 reads BPE tokens, not bytes
    splitter_flops_per_byte: float = 0.0  # the forward of the splitters' models (in both figures above)

    @property
    def parameters(self) -> int:
        return sum(self.parameters_by_component.values())

    def as_toml_comments(self) -> str:
        """The figures as TOML comments (what ``aunet spec show`` prints after the spec, so that its
        output is still a valid spec)."""
        width = max(len(name) for name in self.parameters_by_component)
        lines = [
            "",
            "# --- sizes (`aunet spec show --json` for machine-readable figures) ---",
            f"# parameters: {self.parameters:,}",
        ]
        lines += [f"#   {name:<{width}}  {count:>15,}" for name, count in self.parameters_by_component.items()]
        ngrams = " and n-gram sums" if "ngram_embeddings" in self.parameters_by_component else ""
        source = (
            "measured on the embedded corpus where the spec gives none"
            if self.contraction_measured
            else "from the spec"
        )
        lines += [
            f"# FLOPs per byte: {self.flops_per_byte:.3e} (the paper's accounting: the stacks only)",
            f"#   with poolers, upsamplers, output head{ngrams}: {self.flops_per_byte_all:.3e}",
        ]
        if self.splitter_flops_per_byte:
            lines.append(
                f"#   both with the splitters' models, forward only (frozen): {self.splitter_flops_per_byte:.3e}"
            )
        lines += [
            f"# bytes per position at levels 0..{len(self.contraction) - 1}: "
            + ", ".join(f"{k:.2f}" for k in self.contraction)
            + f" ({source})",
            f"# context: {self.context} {'tokens' if self.tokens else 'bytes'} per row",
        ]
        if self.reference_flops_per_byte is not None:
            lines.append(
                f"# FLOPs per byte, the reference's estimator: {self.reference_flops_per_byte:.3e} "
                "(Lingua's attention term 3.5 x 4 x layers x S x dim / 2; every stack and component)"
            )
        if self.memory:
            gibs = list(self.memory[0].largest_batch)
            lines.append(
                "# training memory, one process: largest batch (rows of the context) that fits in "
                + ", ".join(f"{g} GiB" for g in gibs)
            )
            lines.append(
                "#   (16 B per parameter, 18 with bfloat16 autocast, + activations at the static capacities;"
                " `--json`: formulas)"
            )
            for m in self.memory:
                fits = " ".join(f"{n:>7,}" for n in m.largest_batch.values())
                lines.append(
                    f"#   {m.precision.value:<8} checkpointing {m.checkpointing.value:<9} "
                    f"{m.activation_bytes_per_row / 2**20:>9,.1f} MiB "
                    f"per row, state {m.state_bytes / 2**30:,.2f} GiB: {fits}"
                )
            if self.memory_unknown:
                lines.append(f"#   not counted (no activation formula): {', '.join(self.memory_unknown)}")
        return "\n".join(lines)

    def memory_for(self, precision: Precision, checkpointing: Checkpointing) -> MemoryEstimate:
        """The training memory estimate at one precision and checkpointing mode."""
        for estimate in self.memory:
            if estimate.precision == precision and estimate.checkpointing == checkpointing:
                return estimate
        raise KeyError(f"no memory estimate for {precision.value} with checkpointing {checkpointing.value}")

    def to_json(self) -> dict:
        return {
            "parameters": self.parameters,
            "parameters_by_component": self.parameters_by_component,
            "flops_per_byte": self.flops_per_byte,
            "flops_per_byte_all": self.flops_per_byte_all,
            "reference_flops_per_byte": self.reference_flops_per_byte,
            "flops_per_byte_packed": self.flops_per_byte_packed,
            "splitter_flops_per_byte": self.splitter_flops_per_byte,
            "formulas": FORMULAS,
            "contraction": list(self.contraction),
            "contraction_measured": self.contraction_measured,
            "context": self.context,
            "context_unit": "tokens" if self.tokens else "bytes",
            "memory": [m.to_json() for m in self.memory],
            "memory_unknown": list(self.memory_unknown),
        }


#: What each figure of ``Accounting`` computes, as ``spec show`` states it.
FORMULAS = {
    "flops_per_byte": "the paper's: per stack 6 x non-embedding parameters + 6 x dim x layers x S, "
    "S = the level's positions in the context or its window, over k_i bytes per position; stacks only, "
    "plus each router's 6 x parameters per position of the level below it (its matrix products)",
    "flops_per_byte_all": "flops_per_byte + 6 x (pooler + upsampler parameters) / k_i + 6 x the output head "
    "+ 3 x len(ngram.sizes) x dim_0 (the n-gram sums, forward and backward; the tables are embeddings)",
    "splitter_flops_per_byte": "the forward of each splitter's model (an entropy model), per byte, in flops_per_byte "
    "and flops_per_byte_all: 2 x its non-embedding parameters + 2 x dim x layers x S + 2 x dim x vocabulary "
    "(its output head: the entropy reads every logit); no backward, the model is frozen",
    "flops_per_byte_packed": "flops_per_byte with each stack's attention term scaled by the keys a query attends in "
    "rows packed from the training documents (within its document, row and window) over "
    "those of one document filling the row",
    "reference_flops_per_byte": "the reference's (Lingua's): per stack 6 x non-embedding parameters + "
    "3.5 x 4 x layers x S x dim / 2 (causal), encoder and decoder each, poolers, "
    "upsamplers and head in the parameter term",
    "memory": "per process, no sharding: 16 B per parameter (float32 weights, gradients, AdamW moments; "
    "18 B with bfloat16 autocast's weight copies) + rows x activation bytes of one row at the static "
    "capacities (each stage's fitted per-position formula; poolers, upsamplers, embedding and head "
    "by their tensors), within 90% of the device; a fused attention kernel assumed",
}


def account(spec: Spec, documents: Sequence[int] | None = None) -> Accounting:
    """Parameters per component and FLOPs per byte. The spec must pass ``check_model``;
    contractions it leaves unset are measured on the embedded corpus (and reported as such).
    With ``documents`` (the training documents' lengths in bytes, in order), also the FLOPs per
    byte of rows packed from them (``flops_per_byte_packed``): attention per document and window."""
    measured = any(level.contraction is None and level.router is None for level in spec.levels[1:])
    spec = resolve_spec(spec)
    levels = spec.levels
    depth = spec.depth
    dims = [level.dim for level in levels]
    k = level_contraction(spec)
    context = spec.model.context
    vocab = spec.model.vocab_size
    params: dict[str, int] = {"embedding": vocab * dims[0]}
    flops = packed = 0.0
    extra = 6.0 * dims[0] * vocab / k[0]  # the output head, per byte
    ngram = spec.model.ngram
    if ngram is not None:  # embedding parameters: in no 6 x N term; their sums, forward and backward
        params["ngram_embeddings"] = len(ngram.sizes) * ngram.buckets * dims[0]
        extra += 3.0 * len(ngram.sizes) * dims[0] / k[0]
    for i, level in enumerate(levels):
        stack = level.stage.parameter_count(dim=dims[i])
        attended = context * k[0] / k[i]  # the level's positions in a row (context: positions of level 0)
        per_position = level.stage.flops_per_position(dim=dims[i], attended=attended)
        if documents is not None:
            share = packed_share(documents, k[i], round(attended), getattr(level.stage, "window", None), bos=i == 0)
            whole = level.stage.flops_per_position(dim=dims[i], attended=0.0)
            packed += (1 if i == depth else 2) * (whole + (per_position - whole) * share) / k[i]
        if i < depth:
            params[f"levels[{i}].encoder"] = stack
            params[f"levels[{i}].decoder"] = stack
            flops += 2 * per_position / k[i]
        else:
            params[f"levels[{i}].trunk"] = stack
            flops += per_position / k[i]
        if i and level.router is not None:
            # A router's matrix products run once per position of the level below, like a stack's:
            # counted in the paper's figure, not only in the fuller one.
            params[f"levels[{i}].router"] = level.router.parameter_count(dim=dims[i - 1])
            routing = level.router.flops_per_position(dim=dims[i - 1]) / k[i - 1]
            flops += routing
            packed += routing
        if i:
            pool = level.pooler.parameter_count(dim_in=dims[i - 1], dim_out=dims[i])
            up = level.upsampler.parameter_count(dim_coarse=dims[i], dim_fine=dims[i - 1])
            params[f"levels[{i}].pooler"] = pool
            params[f"levels[{i}].upsampler"] = up
            extra += 6.0 * (pool + up) / k[i]
    params["output"] = dims[0] + dims[0] * vocab  # final norm and head
    if spec.model.level_loss > 0:
        params["level_head"] = dims[0] * (depth + 1)
        extra += 6.0 * params["level_head"]
    splitters = sum(level.splitter.flops_per_byte() for level in levels[1:] if level.splitter is not None)
    reference = reference_flops_per_byte(spec, k, params)
    memory, unknown = memory_estimates(spec, sum(params.values()))
    return Accounting(
        params,
        k,
        measured,
        context,
        flops + splitters,
        flops + extra + splitters,
        reference,
        memory,
        unknown,
        packed + splitters if documents is not None else None,
        spec.model.bpe,
        splitters,
    )


def forward_flops_per_byte(spec: Spec) -> float:
    """FLOPs per byte of a flat byte model's forward alone (what a frozen model costs a splitter
    that reads bytes through it): its stack's training figure over 3 (2 x non-embedding parameters
    + 2 x dim x layers x S, S its context or window), plus its output head, 2 x dim x vocabulary."""
    level = spec.levels[0]
    stack = level.stage.flops_per_position(dim=level.dim, attended=float(spec.model.context)) / 3
    return stack + 2.0 * level.dim * spec.model.vocab_size


def attended_keys(doc_lengths: np.ndarray, length: int, window: int | None) -> float:
    """Mean keys a query attends in rows of ``length`` positions cut from documents of
    ``doc_lengths`` positions packed end to end: causal, within its document and its row, within
    the window."""
    total = int(doc_lengths.sum())
    if total == 0:
        return 0.0
    pos = np.arange(total)
    starts = np.zeros(total, dtype=bool)
    starts[np.cumsum(doc_lengths)[:-1]] = True
    starts[::length] = True
    last = np.maximum.accumulate(np.where(starts, pos, 0))
    keys = pos - last + 1
    if window is not None:
        keys = np.minimum(keys, window)
    return float(keys.mean())


#: Positions of the training stream ``packed_share`` looks at (a sample: the share converges fast).
PACKED_SAMPLE = 1 << 22


def packed_share(documents: Sequence[int], k: float, length: int, window: int | None, *, bos: bool) -> float:
    """Attention work of rows packed from ``documents`` (bytes each) at a level of ``k`` bytes per
    position, as a share of one document filling every row: what the attention term of FLOPs
    per byte is multiplied by when documents are shorter than rows."""
    lengths = np.maximum(np.ceil(np.asarray(documents, dtype=np.float64) / k), 1).astype(np.int64) + (2 if bos else 0)
    keep = np.searchsorted(np.cumsum(lengths), PACKED_SAMPLE) + 1
    lengths = lengths[:keep]
    one = attended_keys(np.array([max(int(lengths.sum()), length)]), length, window)
    return attended_keys(lengths, length, window) / one if one else 1.0


def static_capacity(spec: Spec, length: int) -> list[int]:
    """Segments per row at levels 1..L for rows of ``length`` positions with static shapes: the
    level's ``max_segments`` scaled to the row, else length / k_i x ``segment_margin`` + 8, never
    more than the level below holds. ``AUNet.capacity`` is this."""
    caps: list[int] = []
    below = length
    context = spec.model.context
    for level in spec.levels[1:]:
        if level.max_segments is not None:
            cap = math.ceil(level.max_segments * length / context)
        else:
            cap = math.ceil(length / level.contraction * spec.model.segment_margin) + 8
        below = max(1, min(below, cap))
        caps.append(below)
    return caps


# -- the reference's FLOPs estimator -----------------------------------------------------------


def reference_flops_per_byte(spec: Spec, k: tuple[float, ...], params: dict[str, int]) -> float | None:
    """The authors' estimator (Lingua's): per position of a stack, 6 x its non-embedding
    parameters + 3.5 x 4 x layers x S x dim / 2 (causal attention), with S the positions it
    attends (its level's share of the context, or its window); every stack counted, the encoder
    and the decoder of a level apart; poolers, upsamplers and the output head in the
    parameter term at their own levels. None if a stage gives no such figure."""
    levels, depth = spec.levels, spec.depth
    total = 6.0 * params["output"] / k[0]  # the head, once per position of level 0
    for i, level in enumerate(levels):
        dim = level.dim
        per_position = level.stage.reference_flops_per_position(dim=dim, attended=spec.model.context * k[0] / k[i])
        if per_position is None:
            return None
        total += (1 if i == depth else 2) * per_position / k[i]
        if i:
            total += 6.0 * (params[f"levels[{i}].pooler"] + params[f"levels[{i}].upsampler"]) / k[i]
            total += 6.0 * params.get(f"levels[{i}].router", 0) / k[i - 1]
    return total


# -- memory ------------------------------------------------------------------------------------

#: Device memory sizes the largest-batch estimate is given for, in GiB (a 24 GiB card, A100 40 and
#: 80 GB, H200).
DEVICE_GIB = (24, 40, 80, 141)
#: Bytes per parameter held through a step: float32 weights (4), gradients (4), AdamW's two
#: moments (8); bfloat16 autocast adds a 2-byte copy of each weight.
STATE_BYTES = {Precision.FLOAT32: 16, Precision.BFLOAT16: 18}
#: Share of a device's memory the estimate lets a batch use (the rest: CUDA context, allocator
#: fragmentation, workspaces).
USABLE = 0.9


@attrs.frozen
class MemoryEstimate:
    """Training memory of one process (no sharding) at one precision and checkpointing mode."""

    precision: Precision  # FLOAT32 or BFLOAT16 (autocast)
    checkpointing: Checkpointing
    state_bytes: int  # weights, gradients and optimizer state
    activation_bytes_per_row: float  # one row of `context` bytes at the static capacities
    largest_batch: dict[int, int]  # device GiB -> rows per step that fit (0: not even one)

    def to_json(self) -> dict:
        return {
            "precision": self.precision.value,
            "checkpointing": self.checkpointing.value,
            "state_bytes": self.state_bytes,
            "activation_bytes_per_row": self.activation_bytes_per_row,
            "largest_batch": {str(g): n for g, n in self.largest_batch.items()},
        }


def row_activation_bytes(spec: Spec, *, bfloat16: bool, checkpointing: Checkpointing) -> tuple[float, list[str]]:
    """Bytes one row of ``context`` bytes keeps for backward, and the components with no formula.

    Stages give theirs per position (``activation_bytes_per_position``), times the positions of
    their level at the static capacities, twice below the trunk (encoder and decoder). The rest
    is counted by the tensors it saves: a pooler its gathered input (float32 for the norm, and
    the norm's output), an upsampler its coarse input and its output at every fine position,
    the output head its normalized input and the float32 log-probabilities of the loss, n-gram
    embeddings each n-gram's row index and whether it counts."""
    elem = 2 if bfloat16 else 4
    levels, depth = spec.levels, spec.depth
    positions = [spec.model.context, *static_capacity(spec, spec.model.context)]
    total, unknown = 0.0, []
    for i, level in enumerate(levels):
        per = level.stage.activation_bytes_per_position(dim=level.dim, bfloat16=bfloat16, checkpointing=checkpointing)
        if per is None:
            unknown.append(f"levels[{i}].stage ({level.stage.kind})")
            continue
        total += (1 if i == depth else 2) * per * positions[i]
        if i:
            fine, coarse, below = positions[i - 1], positions[i], levels[i - 1].dim
            total += coarse * below * (4 + elem)  # pooler: gathered input, normalized
            total += coarse * level.dim * elem + fine * below * elem  # upsampler: coarse input, output
    d0 = levels[0].dim
    total += spec.model.context * (d0 * (4 + elem) + spec.model.vocab_size * (4 + elem))  # final norm, head, loss
    if spec.model.ngram is not None:  # each n-gram's row index (int64) and whether it counts (bool)
        total += spec.model.context * len(spec.model.ngram.sizes) * (8 + 1)
    return total, unknown


def memory_estimates(spec: Spec, parameters: int) -> tuple[tuple[MemoryEstimate, ...], tuple[str, ...]]:
    """Largest batch per device size, for float32 and bfloat16, with and without checkpointing."""
    estimates, unknown = [], []
    for precision in (Precision.FLOAT32, Precision.BFLOAT16):
        state = STATE_BYTES[precision] * parameters
        for checkpointing in Checkpointing:
            bfloat16 = precision is Precision.BFLOAT16
            per_row, unknown = row_activation_bytes(spec, bfloat16=bfloat16, checkpointing=checkpointing)
            fits = {gib: max(0, int((gib * 2**30 * USABLE - state) // per_row)) if per_row else 0 for gib in DEVICE_GIB}
            estimates.append(MemoryEstimate(precision, checkpointing, state, per_row, fits))
    return tuple(estimates), tuple(unknown)
