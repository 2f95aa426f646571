"""The AU-Net assembler: a spec in, a causal byte-level model out (docs/method.md sections 1 to 5).

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
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aunet.core.accounting import static_capacity
from aunet.core.embedding import NgramEmbedding
from aunet.core.encoding import SplitterEncoding
from aunet.core.errors import SpecError, SpecIssue
from aunet.core.init import TRUNCATION, Init, init_matrix
from aunet.core.labels import label
from aunet.core.modules import KVCache, Layout, LevelIndex, Router, Upsampler
from aunet.core.spec import ShapeMode, Spec, resolve_spec
from aunet.core.tokens import BOS, EOS, IGNORE, PAD, VOCAB_SIZE


class ModelOutput(NamedTuple):
    """What a forward pass returns.

    Attributes:
        logits: (B, T, V) next-token logits.
        loss: mean next-token cross-entropy in nats over the predicted positions (targets other
            than ``IGNORE``), or None without targets.
        n_predicted: number of predicted positions, or None without targets.
        segments: (L,) positions kept at each level 1..L, summed over the batch (BOS included).
        dropped: (L,) boundaries that did not fit the static shapes, per level.
        level_logits: (B, T, L + 1) logits of the next position's level, from the level head
            (``model.level_loss`` > 0), else None.
        level_loss: its cross-entropy in nats over the positions whose next level is known (the
            same divisor as ``loss``), or None without targets or level head.
        router_loss: the routers' auxiliary losses, weighted and summed (the trainer adds it to
            the objective), or None for a model without routers.

    A NamedTuple (not an attrs class) so that ``torch.compile(fullgraph=True)`` traces it.
    """

    logits: Tensor
    loss: Tensor | None
    n_predicted: Tensor | None
    segments: Tensor
    dropped: Tensor
    level_logits: Tensor | None = None
    level_loss: Tensor | None = None
    router_loss: Tensor | None = None


def boundary_index(is_boundary: Tensor, capacity: int | None) -> LevelIndex:
    """Index the boundaries of each row without host synchronisation (given a capacity).

    Args:
        is_boundary: (B, S_i) bool; column 0 must be True in every row.
        capacity: segments kept per row, or None to keep all (one host sync).
    """
    b, s = is_boundary.shape
    count = is_boundary.sum(1)  # (B,)
    if capacity is None:
        capacity = int(count.max())  # a host sync: give the capacity to avoid it
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
    # The segment pooled at boundary s is the positions after boundary s - 1 up to s itself.
    before = rank + 1 - is_boundary.long()  # (B, S_i): boundaries strictly before each position
    members = torch.where(before < kept[:, None], before, capacity)  # after the last kept one: none
    return LevelIndex(index, valid, segment, offset, kept.sum(), dropped.sum(), members)


class Part(enum.Enum):
    """Which stack of a level a walk is running."""

    ENCODER = "encoder"
    TRUNK = "trunk"
    DECODER = "decoder"


class WalkPlan:
    """What differs between the walks over the U-Net: the full forward (training, evaluation),
    the prefill of a prompt and one decoding step (``aunet.core.decoding``).

    ``AUNet.walk`` calls these in a fixed order; a plan answers from the data (the forward) or
    from the state of a decoding batch (a step). ``top`` is the highest level that gets new
    positions in this walk: the walk runs stages up to it and reuses what the plan remembers above
    it (a decoding step whose byte is no boundary runs the byte stages only).
    """

    top: int

    def layout(self, level: int) -> Layout:
        """The positions of ``level``'s sequence in this walk (shared by its encoder and decoder)."""
        raise NotImplementedError

    def cache(self, level: int, part: Part) -> KVCache | None:
        """The KV cache of one stack, or None (the full forward keeps none)."""
        return None

    def contract(self, level: int, h: Tensor, router: Router | None) -> LevelIndex:
        """How ``level``'s positions pool into ``level + 1``; ``router`` (a routed level + 1)
        decides the boundaries from ``h``, ``level``'s encoder output."""
        raise NotImplementedError

    def pool(self, level: int, h: Tensor, pooler: Any, router: Router | None) -> Tensor | None:
        """``level``'s encoder output ``h`` pooled into ``level + 1`` (called once per walk for
        every level that ran an encoder); None at ``top``, where nothing closes a segment (a
        decoding step's pooler still sees the new position there). A plan may lower ``top``
        here (a decoding step whose router closes no segment)."""
        return pooler(h, self.contract(level, h, router)) if level < self.top else None

    def scale(self, level: int, up: Tensor) -> Tensor:
        """The upsampled vectors of ``level`` (B, S, D), scaled by the router's confidence where
        ``level + 1`` is routed (value 1, gradient to the router); as they are by default."""
        return up

    def expand(self, level: int) -> LevelIndex:
        """How ``level + 1``'s vectors go back onto ``level``'s positions (``segment``, ``offset``)."""
        raise NotImplementedError

    def upsample(self, level: int, upsampler: Upsampler, coarse: Tensor, index: LevelIndex) -> Tensor:
        """``coarse`` (level + 1's vectors) upsampled onto ``level``'s positions by ``index``; a
        decoding step may reuse what it kept from the row's last coarse position."""
        return upsampler(coarse, index.segment, index.offset)

    def coarse(self, level: int, fresh: Tensor | None) -> Tensor:
        """The vectors of ``level`` (>= 1) the upsampler below gets: ``fresh``, this walk's output
        of the level's top stack (trunk or decoder), or None when the level got no new position."""
        assert fresh is not None
        return fresh


class TeacherForced(WalkPlan):
    """The plan of a full forward over (B, T) rows: boundaries from the levels, static or eager
    capacities, attention within documents; with caches and ``valid`` it is a prefill."""

    def __init__(
        self,
        levels: Tensor,
        capacity: Sequence[int | None],
        *,
        doc: Tensor | None,
        valid: Tensor | None = None,
        caches: dict[tuple[int, Part], KVCache] | None = None,
    ) -> None:
        self.top = len(capacity)
        self.lv = levels  # (B, S_i) levels of the current level's positions
        self.capacity = capacity
        self.caches = caches or {}
        self.layouts = [Layout(doc=doc, valid=valid)]
        # Per level, (B, S_level) False at static-shape padding slots (None: none), which the
        # layouts leave out where attention need not know (causal attention never sees them).
        self.real: list[Tensor | None] = [valid]
        self.maps: list[LevelIndex] = []
        self.outputs: dict[int, Tensor] = {}  # level -> its top stack's output (B, S_level, D)
        self.encoded: dict[int, Tensor] = {}  # level -> its encoder's output (B, S_level, D)
        self.smoothing: dict[int, Tensor] = {}  # routed level -> (B, S_level) P at its boundaries
        self.confidence: dict[int, Tensor] = {}  # level below a routed one -> (B, S_level) estimator
        self.router_losses: list[Tensor] = []

    def layout(self, level: int) -> Layout:
        return self.layouts[level]

    def cache(self, level: int, part: Part) -> KVCache | None:
        return self.caches.get((level, part))

    def contract(self, level: int, h: Tensor, router: Router | None) -> LevelIndex:
        below = self.layouts[level]
        if router is None:
            is_boundary = self.lv > level
        else:
            routing = router(h, below)  # (B, S_level)
            real = self.real[level]
            self.router_losses.append(router.loss(routing, real))
            forced = self.lv >= self.top  # document and row starts: every level's
            is_boundary = routing.boundary | forced
            if real is not None:  # padding slots close nothing
                is_boundary = is_boundary & real
            prob = torch.where(forced, 1.0, routing.prob)  # (B, S_level)
            confidence = torch.where(is_boundary, prob, 1 - prob)
            # H-Net's straight-through estimator: the value is exactly 1, the gradient reaches prob.
            self.confidence[level] = confidence - confidence.detach() + 1.0
        if below.valid is not None:
            is_boundary = is_boundary & below.valid
        m = boundary_index(is_boundary, self.capacity[level])
        self.maps.append(m)
        if router is not None and router.smooth:
            self.smoothing[level + 1] = torch.gather(prob, 1, m.index)  # (B, S_{level+1})
        self.lv = torch.gather(self.lv, 1, m.index).masked_fill(~m.valid, 0)  # padding slots pool nothing
        self.real.append(m.valid)
        doc = torch.gather(below.doc, 1, m.index) if below.doc is not None else None
        self.layouts.append(Layout(doc=doc, valid=m.valid if below.valid is not None else None))
        return m

    def pool(self, level: int, h: Tensor, pooler: Any, router: Router | None) -> Tensor | None:
        self.encoded[level] = h
        return super().pool(level, h, pooler, router)

    def scale(self, level: int, up: Tensor) -> Tensor:
        confidence = self.confidence.get(level)
        return up if confidence is None else up * confidence.unsqueeze(-1).to(up.dtype)

    def expand(self, level: int) -> LevelIndex:
        return self.maps[level]

    def coarse(self, level: int, fresh: Tensor | None) -> Tensor:
        if level in self.smoothing:
            fresh = smooth(fresh, self.smoothing[level])
        self.outputs[level] = fresh
        return fresh


def smooth(z: Tensor, p: Tensor) -> Tensor:
    """H-Net's smoothing of a routed level's vectors: zbar_s = p_s z_s + (1 - p_s) zbar_{s-1}
    (zbar_{-1} = 0) over (B, S, D) vectors and (B, S) probabilities, in float32, by a scan of
    log2(S) doubling steps (no loop over positions, no host sync). The first position of a row
    and every document start have p = 1, so nothing leaks across documents."""
    a = (1 - p.float()).unsqueeze(-1)  # (B, S, 1) weight of what came before
    b = p.float().unsqueeze(-1) * z.float()  # (B, S, D)
    d = 1
    while d < z.shape[1]:
        b = torch.cat([b[:, :d], b[:, d:] + a[:, d:] * b[:, :-d]], dim=1)
        a = torch.cat([a[:, :d], a[:, d:] * a[:, :-d]], dim=1)
        d *= 2
    return b.to(z.dtype)


class AUNet(nn.Module):
    """An Autoregressive U-Net of any depth, assembled from a resolved spec (``build_model``)."""

    def __init__(self, spec: Spec, *, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.depth = spec.depth
        levels = spec.levels
        dims = [level.dim for level in levels]
        depth = self.depth
        self.vocab_size = spec.model.vocab_size
        self.embed = nn.Embedding(self.vocab_size, dims[0])
        self.encoders = nn.ModuleList(levels[i].stage.build(dim=dims[i], device=device) for i in range(depth))
        self.trunk = levels[depth].stage.build(dim=dims[depth], device=device)
        self.decoders = nn.ModuleList(levels[i].stage.build(dim=dims[i], device=device) for i in range(depth))
        self.poolers = nn.ModuleList(
            levels[i].pooler.build(dim_in=dims[i - 1], dim_out=dims[i]) for i in range(1, depth + 1)
        )
        self.upsamplers = nn.ModuleList(
            levels[i].upsampler.build(dim_coarse=dims[i], dim_fine=dims[i - 1]) for i in range(1, depth + 1)
        )
        # Routed levels, by number (1..L): each reads the encoder output of the level below.
        self.routers = nn.ModuleDict(
            {str(i): levels[i].router.build(dim=dims[i - 1]) for i in range(1, depth + 1) if levels[i].router}
        )
        self._router_of = {int(level): router for level, router in self.routers.items()}  # the same modules
        self.routed = spec.routed
        self.norm = nn.RMSNorm(dims[0], eps=spec.model.norm_eps)
        self.head = nn.Linear(dims[0], self.vocab_size, bias=False)
        # The reference's auxiliary head: the level of the next position, from the same features.
        self.level_head = nn.Linear(dims[0], depth + 1, bias=False) if spec.model.level_loss > 0 else None
        self.skip = tuple(level.skip for level in levels[:depth])
        std = spec.model.init_std or dims[0] ** -0.5
        init = spec.model.init
        for weight in (self.embed.weight, self.head.weight):
            _init_embedding(weight, init, std)
        if self.level_head is not None:
            init_matrix(self.level_head.weight, init, std=std, fan_in=dims[0])
        # Built last, so that a spec without n-grams draws the same initial weights as before.
        ngram = spec.model.ngram
        self.ngram = (
            NgramEmbedding(sizes=ngram.sizes, buckets=ngram.buckets, dim=dims[0]) if ngram is not None else None
        )
        for table in self.ngram.tables.values() if self.ngram is not None else ():
            _init_embedding(table.weight, init, std)
        if device is not None:
            self.to(device)

    # -- embedding -------------------------------------------------------------------------------

    def embed_tokens(self, tokens: Tensor, *, before: Tensor | None = None) -> Tensor:
        """(B, S) ids -> (B, S, D_0): the byte embedding, with n-gram tables (``model.ngram``)
        their rows added and the sum divided by ``len(sizes) + 1`` (BLT's). ``before`` (B,
        ``ngram.lookback``): the ids that precede ``tokens`` in each row (decoding), None where
        ``tokens`` start their rows (``aunet.core.embedding``)."""
        embedded = self.embed(tokens)  # (B, S, D_0)
        if self.ngram is None:
            return embedded
        return (embedded + self.ngram(tokens, before)) / (len(self.ngram.sizes) + 1)

    # -- shapes ----------------------------------------------------------------------------------

    def capacity(self, length: int) -> list[int]:
        """Static segments per row at levels 1..L for rows of ``length`` positions
        (``aunet.core.accounting.static_capacity``)."""
        return static_capacity(self.spec, length)

    def top_levels(self, tokens: Tensor, levels: Tensor) -> Tensor:
        """(B, T) levels with every BOS and every row's first position at the top level."""
        first = torch.arange(tokens.shape[1], device=tokens.device) == 0
        return torch.where((tokens == BOS) | first, self.depth, levels.long())

    def eager_capacity(self, levels: Tensor) -> list[int | None]:
        """Segments per row at levels 1..L that keep every boundary of (B, T) ``levels`` (as
        ``top_levels`` gives them): one host synchronisation for all levels. Jobs compute the
        same on the host from their batches (``aunet.jobs.data.packing.Batch.capacity``). A
        routed level's boundaries are only known in the forward: None, counted there (a sync)."""
        counts = torch.stack([(levels > i).sum(1).max() for i in range(self.depth)]) if self.depth else None
        return self.for_routers(counts.tolist() if counts is not None else [])

    def for_routers(self, capacity: Sequence[int | None]) -> list[int | None]:
        """Eager capacities with None at the routed levels, whose boundaries the host cannot
        count from the levels of a batch: the forward counts them (one host sync per level)."""
        return [None if routed else c for c, routed in zip(capacity, self.routed)]

    def router(self, level: int) -> Router | None:
        """The router of ``level`` (1..L), or None where a splitter decides its boundaries."""
        return self._router_of.get(level)

    # -- the walk --------------------------------------------------------------------------------

    def walk(self, h: Tensor, plan: WalkPlan) -> Tensor:
        """The U-Net, once for every use: contracting up to ``plan.top``, then expanding.

        ``h`` is (B, S_0, D_0), the embedded new positions of level 0; returns (B, S_0, D_0), the
        output of decoder 0 (the trunk's output for a flat model).
        """
        depth = self.depth
        skips: list[Tensor] = []
        for i in range(depth + 1):
            if i == depth:
                with label("trunk"):
                    h = self.trunk(h, layout=plan.layout(i), cache=plan.cache(i, Part.TRUNK))  # (B, S_L, D_L)
                break
            with label(f"encoder.{i}"):
                h = self.encoders[i](h, layout=plan.layout(i), cache=plan.cache(i, Part.ENCODER))  # (B, S_i, D_i)
            skips.append(h)
            with label(f"pool.{i + 1}"):
                pooled = plan.pool(i, h, self.poolers[i], self.router(i + 1))  # (B, S_{i+1}, D_{i+1})
            if pooled is None:  # level i is the walk's top
                break
            h = pooled
        top = plan.top
        for i in reversed(range(min(top, depth - 1) + 1)):
            with label(f"upsample.{i + 1}"):
                coarse = plan.coarse(i + 1, h if i + 1 <= top else None)  # (B, S_{i+1}, D_{i+1})
                m = plan.expand(i)
                up = plan.scale(i, plan.upsample(i, self.upsamplers[i], coarse, m))  # (B, S_i, D_i)
                h = skips[i] + up if self.skip[i] else up
            with label(f"decoder.{i}"):
                h = self.decoders[i](h, layout=plan.layout(i), cache=plan.cache(i, Part.DECODER))
        return h

    # -- forward ---------------------------------------------------------------------------------

    def forward(
        self,
        tokens: Tensor,
        levels: Tensor,
        targets: Tensor | None = None,
        *,
        shapes: ShapeMode = ShapeMode.STATIC,
        capacity: Sequence[int] | None = None,
        doc_mask: bool | None = None,
        loss_divisor: float | None = None,
    ) -> ModelOutput:
        """Next-token logits (and loss) for rows of tokens. No host synchronisation with static
        shapes or a given ``capacity``; values are not checked here (``validate`` does that).

        Args:
            tokens: (B, T) int token ids: bytes 0..255, BOS, EOS, PAD.
            levels: (B, T) int level of each position (``compute_levels``); BOS positions and
                position 0 are forced to the top level.
            targets: (B, T) int next token at each position, ``IGNORE`` where nothing is predicted.
            shapes: STATIC (fixed capacities, counts drops) or EAGER (keeps every boundary).
            capacity: segments per row at levels 1..L, overriding ``shapes`` (jobs pass the eager
                capacities they computed on the host, so eager shapes need no sync either).
            doc_mask: keep attention within documents (rows holding several BOS); None: the spec's
                ``model.doc_mask``. False when every row holds a single document, which lets
                attention take its plain causal path.
            loss_divisor: divide the summed loss by this instead of the rows' predicted positions
                (a distributed trainer passes the global count over the world size).
        """
        self._check_shapes(tokens, levels, targets)
        if self.debug and not torch.compiler.is_compiling():
            self.validate(tokens, levels, targets)
        _b, t = tokens.shape
        lv = self.top_levels(tokens, levels)  # (B, T)
        if capacity is None:
            capacity = self.capacity(t) if shapes is ShapeMode.STATIC else self.eager_capacity(lv)
        else:
            capacity = self.for_routers(capacity)
        if doc_mask is None:
            doc_mask = self.spec.model.doc_mask
        doc = (tokens == BOS).long().cumsum(1) if doc_mask else None  # (B, T) document of each position
        plan = TeacherForced(lv, capacity, doc=doc)
        with label("encoder.0" if self.depth else "trunk"):
            embedded = self.embed_tokens(tokens)  # (B, T, D_0)
        h = self.walk(embedded, plan)  # (B, T, D_0)
        with label("head"):
            features = self.norm(h)  # (B, T, D_0)
            logits = self.head(features)  # (B, T, V)
            level_logits = self.level_head(features) if self.level_head is not None else None  # (B, T, L + 1)

        loss = n_predicted = level_loss = None
        if targets is not None:
            with label("loss"):
                n_predicted = (targets != IGNORE).sum()
                divisor = n_predicted.clamp(min=1) if loss_divisor is None else loss_divisor
                nll = F.cross_entropy(
                    logits.float().view(-1, self.vocab_size),
                    targets.reshape(-1).long(),
                    ignore_index=IGNORE,
                    reduction="sum",
                )
                loss = nll / divisor
                if level_logits is not None:
                    level_loss = (
                        F.cross_entropy(
                            level_logits.float().view(-1, self.depth + 1),
                            self.level_targets(lv, targets).view(-1),
                            ignore_index=IGNORE,
                            reduction="sum",
                        )
                        / divisor
                    )
        if plan.maps:
            segments = torch.stack([m.kept for m in plan.maps])
            dropped = torch.stack([m.dropped for m in plan.maps])
        else:
            segments = dropped = torch.zeros(0, dtype=torch.long, device=tokens.device)
        router_loss = torch.stack(plan.router_losses).sum() if plan.router_losses else None
        return ModelOutput(logits, loss, n_predicted, segments, dropped, level_logits, level_loss, router_loss)

    @staticmethod
    def level_targets(levels: Tensor, targets: Tensor) -> Tensor:
        """(B, T) the level of the next position, where a next byte is predicted and the row
        holds it (``IGNORE`` at the last position and wherever ``targets`` is): what the level
        head learns. ``levels`` as ``top_levels`` gives them."""
        nxt = torch.cat([levels[:, 1:], torch.full_like(levels[:, :1], IGNORE)], dim=1)  # (B, T)
        return torch.where(targets == IGNORE, IGNORE, nxt).long()

    #: Check token and level values in every forward (a host sync each time): for debugging.
    debug: bool = False

    def _check_shapes(self, tokens: Tensor, levels: Tensor, targets: Tensor | None) -> None:
        if tokens.dim() != 2 or tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
            raise ValueError(f"tokens must be a (B, T) integer tensor, got {tuple(tokens.shape)} {tokens.dtype}")
        if tokens.shape[1] == 0:
            raise ValueError("tokens must hold at least one position per row, got T = 0")
        if levels.shape != tokens.shape:
            raise ValueError(
                f"levels has shape {tuple(levels.shape)} but tokens has {tuple(tokens.shape)}; "
                "give one level per token (compute_levels)"
            )
        if targets is not None and targets.shape != tokens.shape:
            raise ValueError(f"targets has shape {tuple(targets.shape)} but tokens has {tuple(tokens.shape)}")

    def validate(self, tokens: Tensor, levels: Tensor, targets: Tensor | None = None) -> None:
        """ValueError naming the first bad value: a token id outside the vocabulary, a level
        outside 0..L, a target that is neither a token nor ``IGNORE``. Reads the tensors back
        (one host sync): call it once per batch of untrusted input, not in a training step."""
        self._check_shapes(tokens, levels, targets)
        low, high = (int(x) for x in torch.stack([tokens.min(), tokens.max()]).tolist())
        if low < 0 or high >= self.vocab_size:
            bad = low if low < 0 else high
            raise ValueError(
                f"token id {bad} is out of range; ids are 0..255 (bytes), {BOS} (BOS), {EOS} (EOS), {PAD} (PAD)"
            )
        lmin, lmax = (int(x) for x in torch.stack([levels.min().long(), levels.max().long()]).tolist())
        if lmin < 0 or lmax > self.depth:
            raise ValueError(
                f"level {lmin if lmin < 0 else lmax} is out of range; this model has levels 0..{self.depth}"
            )
        if targets is not None:
            bad = (targets != IGNORE) & ((targets < 0) | (targets >= self.vocab_size))
            if bool(bad.any()):
                value = int(targets[bad][0])
                raise ValueError(f"target {value} is out of range; targets are token ids or {IGNORE} (ignored)")


def _init_embedding(weight: Tensor, init: Init, std: float) -> None:
    """The byte embedding's, the n-gram tables' and the head's initialization."""
    if init is Init.REFERENCE:  # truncated at 3 sigmas, as every reference matrix
        nn.init.trunc_normal_(weight, std=std, a=-TRUNCATION * std, b=TRUNCATION * std)
    else:
        nn.init.normal_(weight, std=std)


# -- building --------------------------------------------------------------------------------------


_WRAPPERS = ("module.", "_orig_mod.", "_fsdp_wrapped_module.")


def parameter_level(name: str, depth: int) -> int:
    """The level (0 = bytes .. ``depth`` = the trunk) a parameter of an AU-Net belongs to, by its
    name: encoders and decoders by their index, the trunk at the top, a pooler, upsampler or
    router with the coarser level it makes, the embeddings, n-gram tables, final norm and heads
    with the bytes. Wrappers' prefixes (DDP, torch.compile) are skipped."""
    while name.startswith(_WRAPPERS):
        name = name.split(".", 1)[1]
    parts = name.split(".")
    if parts[0] in ("encoders", "decoders"):
        return int(parts[1])
    if parts[0] in ("poolers", "upsamplers"):
        return int(parts[1]) + 1
    if parts[0] == "routers":
        return int(parts[1])
    if parts[0] == "trunk":
        return depth
    if parts[0] in ("embed", "ngram", "norm", "head", "level_head"):
        return 0
    raise ValueError(f"parameter {name!r} belongs to no level of the model")


def build_model(
    spec: Spec, *, device: torch.device | str | None = None, contraction: Sequence[float] | None = None
) -> AUNet:
    """Check the spec (every problem with its path), fill its defaults, build the model.

    ``contraction`` (bytes per segment of levels 1..L, measured on the training data) fills the
    levels whose spec gives none; without it they are measured on the embedded corpus. Either way
    the figures are in ``model.spec``, which a checkpoint records.
    """
    spec = resolve_spec(spec, contraction=contraction)
    issues = spec.check_model()
    if issues:
        raise SpecError(issues)
    return AUNet(spec, device=device)


def encode(data: bytes, *, bos: bool = True, eos: bool = False) -> Tensor:
    """(T,) int64 token ids of one document: [BOS] + bytes [+ EOS]."""
    ids = torch.frombuffer(bytearray(data), dtype=torch.uint8).long() if data else torch.zeros(0, dtype=torch.long)
    parts = ([torch.tensor([BOS])] if bos else []) + [ids] + ([torch.tensor([EOS])] if eos else [])
    return torch.cat(parts)


def compute_levels(spec: Spec, data: bytes, *, bos: bool = True, eos: bool = False) -> Tensor:
    """(T,) uint8 level of every position of one document, aligned with ``encode``.

    With ``bos`` (the default) the first entry is the BOS position, at the top level L; with
    ``eos`` the last is the EOS position, at level 0. Without either, one level per byte. These
    are the levels of ``SplitterEncoding(spec.splitter_stack()).encode`` (``aunet.core.encoding``).
    """
    issues = spec.check_splitting()
    if issues:
        raise SpecError(issues)
    levels = SplitterEncoding(spec.splitter_stack()).encode(data, eos=eos).levels  # BOS first
    return torch.from_numpy(levels[0 if bos else 1 :].copy())


__all__ = [
    "BOS",
    "EOS",
    "IGNORE",
    "PAD",
    "VOCAB_SIZE",
    "AUNet",
    "ModelOutput",
    "ShapeMode",
    "SpecIssue",
    "build_model",
    "compute_levels",
    "encode",
]
