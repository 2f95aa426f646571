"""The AU-Net assembler: a spec in, a causal byte-level model out (AUNET.md sections 1 to 5).

Contracting path: embed bytes -> encoder_0 -> pool_1 -> encoder_1 -> ... -> trunk. Expanding
path: trunk -> upsample_L (+ skip from encoder_{L-1}) -> decoder_{L-1} -> ... -> upsample_1
(+ skip from encoder_0) -> decoder_0 -> RMSNorm -> Linear(d_0 -> vocabulary).

A position of level i is pooled into level i+1 iff its level is above i. Every document start
(BOS) and the first position of every row are forced to the top level, so every position has a
coarse vector at or before it at every level. Fine position j receives the coarse vector of the
last boundary at or before j (never a later one): that, with causal stages, makes the whole model
causal, which the tests check bit for bit.

Shapes. ``ShapeMode.STATIC`` (training, ``torch.compile``) keeps a fixed number of segments per
row at each level, derived from the row length and the level's contraction; a boundary that does
not fit is dropped, and every drop is counted in the output (``dropped``), never silent. Because a
boundary's rank depends only on the boundaries before it, dropping keeps the model causal.
``ShapeMode.EAGER`` sizes each level to the batch's largest row and drops nothing.

Dimension alphabet: B batch, T bytes (positions of level 0), S positions of the current level,
D width, V vocabulary, L pooling levels.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aunet.core.accounting import level_contraction
from aunet.core.errors import SpecError, SpecIssue
from aunet.core.modules import Layout
from aunet.core.spec import Spec, resolve_spec
from aunet.core.tokens import BOS, EOS, IGNORE, PAD, VOCAB_SIZE



class ShapeMode(enum.Enum):
    """How many segments each level keeps per row."""

    STATIC = "static"  # fixed per row length: compiles; drops (and counts) what does not fit
    EAGER = "eager"  # the batch's largest row: drops nothing, shapes follow the data


class ModelOutput(NamedTuple):
    """What a forward pass returns.

    Attributes:
        logits: (B, T, V) next-token logits.
        loss: mean next-token cross-entropy in nats over the predicted positions (targets other
            than ``IGNORE``), or None without targets.
        n_predicted: number of predicted positions, or None without targets.
        segments: (L,) positions kept at each level 1..L, summed over the batch (BOS included).
        dropped: (L,) boundaries that did not fit the static shapes, per level.

    A NamedTuple (not an attrs class) so that ``torch.compile(fullgraph=True)`` traces it.
    """

    logits: Tensor
    loss: Tensor | None
    n_predicted: Tensor | None
    segments: Tensor
    dropped: Tensor


class LevelIndex(NamedTuple):
    """How level i's positions map onto level i+1 (all (B, S_i) or (B, S_next))."""

    index: Tensor  # (B, S_next) position in level i of each level-(i+1) position
    valid: Tensor  # (B, S_next) False for padding slots (after a row's last boundary)
    segment: Tensor  # (B, S_i) which level-(i+1) position each level-i position belongs to
    offset: Tensor  # (B, S_i) distance from that segment's boundary, in level-i positions
    kept: Tensor  # () boundaries kept, summed over the batch
    dropped: Tensor  # () boundaries that did not fit


def boundary_index(is_boundary: Tensor, capacity: int | None) -> LevelIndex:
    """Index the boundaries of each row without host synchronisation (given a capacity).

    Args:
        is_boundary: (B, S_i) bool; column 0 must be True in every row.
        capacity: segments kept per row, or None to keep all (EAGER: one host sync).
    """
    b, s = is_boundary.shape
    count = is_boundary.sum(1)  # (B,)
    if capacity is None:
        capacity = int(count.max())
    rank = is_boundary.long().cumsum(1) - 1  # (B, S_i): index of the last boundary at or before
    slot = torch.where(is_boundary & (rank < capacity), rank, capacity)  # overflow -> spare slot
    positions = torch.arange(s, device=is_boundary.device).expand(b, s)
    index = torch.zeros(b, capacity + 1, dtype=torch.long, device=is_boundary.device)
    index = index.scatter(1, slot, positions)[:, :capacity]  # (B, S_next); padding slots hold 0
    segment = rank.clamp(max=capacity - 1)  # (B, S_i)
    offset = positions - torch.gather(index, 1, segment)  # (B, S_i)
    dropped = (count - capacity).clamp(min=0)
    kept = count - dropped
    valid = torch.arange(capacity, device=is_boundary.device)[None] < kept[:, None]
    return LevelIndex(index, valid, segment, offset, kept.sum(), dropped.sum())


class AUNet(nn.Module):
    """An Autoregressive U-Net of any depth, assembled from a resolved spec."""

    def __init__(self, spec: Spec, *, device: torch.device | str | None = None,
                 contraction: Sequence[float] | None = None) -> None:  # fmt: skip
        super().__init__()
        self.spec = spec
        self.depth = spec.depth
        levels = spec.levels
        dims = [level.dim for level in levels]
        self.dims = dims
        depth = self.depth
        self.embed = nn.Embedding(VOCAB_SIZE, dims[0])
        self.encoders = nn.ModuleList(levels[i].stage.build(dim=dims[i], device=device) for i in range(depth))
        self.trunk = levels[depth].stage.build(dim=dims[depth], device=device)
        self.decoders = nn.ModuleList(levels[i].stage.build(dim=dims[i], device=device) for i in range(depth))
        self.poolers = nn.ModuleList(
            levels[i].pooler.build(dim_in=dims[i - 1], dim_out=dims[i]) for i in range(1, depth + 1)
        )
        self.upsamplers = nn.ModuleList(
            levels[i].upsampler.build(dim_coarse=dims[i], dim_fine=dims[i - 1]) for i in range(1, depth + 1)
        )
        self.norm = nn.RMSNorm(dims[0], eps=spec.model.norm_eps)
        self.head = nn.Linear(dims[0], VOCAB_SIZE, bias=False)
        std = spec.model.init_std or dims[0] ** -0.5
        nn.init.normal_(self.embed.weight, std=std)
        nn.init.normal_(self.head.weight, std=std)
        self.contraction = tuple(contraction) if contraction is not None else level_contraction(spec)
        if device is not None:
            self.to(device)

    # -- shapes ----------------------------------------------------------------------------------

    def capacity(self, length: int) -> list[int]:
        """Static segments per row at levels 1..L for rows of ``length`` positions."""
        caps: list[int] = []
        below = length
        context = self.spec.model.context
        for i in range(1, self.depth + 1):
            level = self.spec.levels[i]
            if level.max_segments is not None:
                cap = math.ceil(level.max_segments * length / context)
            else:
                cap = math.ceil(length / self.contraction[i] * self.spec.model.segment_margin) + 8
            below = max(1, min(below, cap))
            caps.append(below)
        return caps

    # -- forward ---------------------------------------------------------------------------------

    def forward(self, tokens: Tensor, levels: Tensor, targets: Tensor | None = None, *,
                shapes: ShapeMode = ShapeMode.STATIC, doc_mask: bool | None = None) -> ModelOutput:  # fmt: skip
        """Next-token logits (and loss) for rows of tokens.

        Args:
            tokens: (B, T) int token ids: bytes 0..255, BOS, EOS, PAD.
            levels: (B, T) int level of each position (``compute_levels``); BOS positions and
                position 0 are forced to the top level.
            targets: (B, T) int next token at each position, ``IGNORE`` where nothing is predicted.
            shapes: STATIC (fixed capacities, counts drops) or EAGER (keeps every boundary).
            doc_mask: keep attention within documents (rows holding several BOS). None decides
                from the data (one host sync) when eager, and masks when compiling.
        """
        if not torch.compiler.is_compiling():
            self._validate(tokens, levels, targets)
        b, t = tokens.shape
        depth = self.depth
        positions = torch.arange(t, device=tokens.device)
        is_bos = tokens == BOS
        lv = torch.where(is_bos | (positions == 0), depth, levels.long())  # (B, T)
        if doc_mask is None:
            doc_mask = torch.compiler.is_compiling() or bool(is_bos[:, 1:].any())
        doc = is_bos.long().cumsum(1) if doc_mask else None  # (B, T)
        caps = self.capacity(t) if shapes is ShapeMode.STATIC else [None] * depth

        h = self.embed(tokens)  # (B, T, D_0)
        layouts = [Layout(doc=doc)]
        skips: list[Tensor] = []
        maps: list[LevelIndex] = []
        for i in range(depth):
            h = self.encoders[i](h, layout=layouts[i])  # (B, S_i, D_i)
            skips.append(h)
            m = boundary_index(lv > i, caps[i])
            maps.append(m)
            h = self.poolers[i](h, m.index)  # (B, S_{i+1}, D_{i+1})
            lv = torch.gather(lv, 1, m.index).masked_fill(~m.valid, 0)  # padding slots pool nothing
            coarse_doc = torch.gather(layouts[i].doc, 1, m.index) if doc_mask else None
            layouts.append(Layout(doc=coarse_doc))
        h = self.trunk(h, layout=layouts[depth])  # (B, S_L, D_L)
        for i in reversed(range(depth)):
            m = maps[i]
            h = skips[i] + self.upsamplers[i](h, m.segment, m.offset)  # (B, S_i, D_i)
            h = self.decoders[i](h, layout=layouts[i])
        logits = self.head(self.norm(h))  # (B, T, V)

        loss = n_predicted = None
        if targets is not None:
            predicted = targets != IGNORE
            n_predicted = predicted.sum()
            nll = F.cross_entropy(logits.float().view(-1, VOCAB_SIZE), targets.reshape(-1).long(),
                                  ignore_index=IGNORE, reduction="sum")  # fmt: skip
            loss = nll / n_predicted.clamp(min=1)
        if maps:
            segments = torch.stack([m.kept for m in maps])
            dropped = torch.stack([m.dropped for m in maps])
        else:
            segments = dropped = torch.zeros(0, dtype=torch.long, device=tokens.device)
        return ModelOutput(logits, loss, n_predicted, segments, dropped)

    def generate(self, prompts, max_new_bytes: int, temperature: float = 0.0, top_k: int | None = None,
                 top_p: float | None = None, seed: int = 0, stop=None, on_bytes=None) -> list[bytes]:  # fmt: skip
        """New bytes per prompt, decoded with per-stage KV caches (``aunet.core.generate.generate``)."""
        from aunet.core.generate import generate

        return generate(self, prompts, max_new_bytes, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                        stop=stop, on_bytes=on_bytes)  # fmt: skip

    def _validate(self, tokens: Tensor, levels: Tensor, targets: Tensor | None) -> None:
        if tokens.dim() != 2 or tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
            raise ValueError(f"tokens must be a (B, T) integer tensor, got {tuple(tokens.shape)} {tokens.dtype}")
        if tokens.shape[1] == 0:
            raise ValueError("tokens must hold at least one position per row, got T = 0")
        if levels.shape != tokens.shape:
            raise ValueError(f"levels has shape {tuple(levels.shape)} but tokens has {tuple(tokens.shape)}; "
                             "give one level per token (compute_levels)")  # fmt: skip
        if targets is not None and targets.shape != tokens.shape:
            raise ValueError(f"targets has shape {tuple(targets.shape)} but tokens has {tuple(tokens.shape)}")
        low, high = int(tokens.min()), int(tokens.max())
        if low < 0 or high >= VOCAB_SIZE:
            bad = low if low < 0 else high
            raise ValueError(f"token id {bad} is out of range; ids are 0..255 (bytes), {BOS} (BOS), "
                             f"{EOS} (EOS), {PAD} (PAD)")  # fmt: skip
        lmin, lmax = int(levels.min()), int(levels.max())
        if lmin < 0 or lmax > self.depth:
            raise ValueError(f"level {lmin if lmin < 0 else lmax} is out of range; this model has levels "
                             f"0..{self.depth}")  # fmt: skip


# -- building --------------------------------------------------------------------------------------


def build_model(spec: Spec, *, device: torch.device | str | None = None,
                contraction: Sequence[float] | None = None) -> AUNet:  # fmt: skip
    """Check the spec (every problem with its path), fill its defaults, build the model."""
    spec = resolve_spec(spec)
    issues = spec.check_model()
    if issues:
        raise SpecError(issues)
    return AUNet(spec, device=device, contraction=contraction)


def encode(data: bytes, *, bos: bool = True, eos: bool = False) -> Tensor:
    """(T,) int64 token ids of one document: [BOS] + bytes [+ EOS]."""
    ids = torch.frombuffer(bytearray(data), dtype=torch.uint8).long() if data else torch.zeros(0, dtype=torch.long)
    parts = ([torch.tensor([BOS])] if bos else []) + [ids] + ([torch.tensor([EOS])] if eos else [])
    return torch.cat(parts)


def compute_levels(spec: Spec, data: bytes, *, bos: bool = True, eos: bool = False) -> Tensor:
    """(T,) uint8 level of every position of one document, aligned with ``encode``.

    With ``bos`` (the default) the first entry is the BOS position, at the top level L; with
    ``eos`` the last is the EOS position, at level 0. Without either, one level per byte.
    """
    stack = spec.splitter_stack()
    issues = spec.check_splitting()
    if issues:
        raise SpecError(issues)
    levels = torch.from_numpy(stack.levels(data).copy())
    parts = ([torch.tensor([spec.depth], dtype=torch.uint8)] if bos else []) + [levels]
    if eos:
        parts.append(torch.zeros(1, dtype=torch.uint8))
    return torch.cat(parts)


__all__ = ["AUNet", "BOS", "EOS", "IGNORE", "PAD", "VOCAB_SIZE", "ModelOutput", "ShapeMode", "SpecIssue",
           "build_model", "compute_levels", "encode"]  # fmt: skip
