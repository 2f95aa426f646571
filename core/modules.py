"""The model's pluggable module interfaces: Stage, Pooler, Upsampler, Router, AttentionBackend.

An AU-Net (docs/method.md section 1) is assembled from these: at each level an encoder and a decoder
``Stage`` (the trunk at the top), a ``Pooler`` from each level to the next and an ``Upsampler``
back. The assembler computes which positions are boundaries and hands the components plain index
tensors; no component sees the splitters, the levels or the batch's documents directly, and none
may synchronise with the host or give shapes that depend on data.

Dimension alphabet: B batch, T positions at the finer level, S positions at the current (or
coarser) level, D width, H heads, K head dim.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn


class Layout:
    """Where the positions of one level's sequence sit; built once per level per forward and
    shared by the level's encoder and decoder (and their attention masks, through ``cache``).

    Attributes:
        doc: (B, S) int32 document index of each position within its row: attention never
            crosses documents. None when every row holds a single document, which lets
            backends use their plain causal fast path.
        valid: (B, S) bool, False for static-shape padding. Padding only ever follows the real
            positions of a row, so causal attention keeps real positions from seeing it.
        pos: (B, S) int64 index of each position in the stage's own sequence (RoPE), or None for
            ``arange(S)`` in every row. Incremental decoding passes the cache lengths here.
        rows: (B',) int64, decoding only: the rows that have a new position (a level only some
            rows of a decoding step reached); a stage computes those rows alone, gives back the
            others as they came in, and leaves their caches untouched. None: every row.
        cache: per-forward memo for backends (the mask of this layout, built once).

    A plain class (not attrs) so that ``torch.compile(fullgraph=True)`` traces its construction.
    """

    def __init__(
        self,
        doc: Tensor | None = None,
        valid: Tensor | None = None,
        pos: Tensor | None = None,
        rows: Tensor | None = None,
    ) -> None:
        self.doc = doc
        self.valid = valid
        self.pos = pos
        self.rows = rows
        self.cache: dict[str, Any] = {}


class LevelIndex(NamedTuple):
    """How level i's positions map onto level i+1: what poolers and upsamplers are given.

    ``index``, ``valid``: (B, S_next) the level-i position of each level-(i+1) position (its
    boundary) and False for static-shape padding slots. ``segment``, ``offset``: (B, S_i) the
    level-(i+1) position whose vector each level-i position receives when expanding (the last
    boundary at or before it) and the distance from that boundary. ``members``: (B, S_i) the
    level-(i+1) position each level-i position is pooled into (the first boundary at or after
    it: a segment ends at its boundary), S_next for none (after the last kept boundary).
    ``kept``, ``dropped``: () boundaries kept and dropped by static shapes, over the batch.
    """

    index: Tensor
    valid: Tensor
    segment: Tensor
    offset: Tensor
    kept: Tensor
    dropped: Tensor
    members: Tensor


def one_position(batch: int, device: Any, boundary: Tensor | None = None) -> LevelIndex:
    """The ``LevelIndex`` of one new level-i position per row that is (``boundary``) the new
    level-(i+1) position: what a decoding step hands poolers and upsamplers."""
    zero = torch.zeros(batch, 1, dtype=torch.long, device=device)
    valid = torch.ones(batch, 1, dtype=torch.bool, device=device) if boundary is None else boundary[:, None]
    none = torch.zeros((), dtype=torch.long, device=device)
    return LevelIndex(zero, valid, zero, zero, none, none, zero)


#: A row's keys (one layer, all heads) from which attending row by row beats gathering the rows
#: first, on a CPU: a gather copies every key of the rows (read and written, then read again by
#: attention), a row's attention call costs about 17 microseconds more. On one core of this
#: project's x86 machine, 4 to 14 rows of a (64, 5, S, 64) cache: S = 30 gathers twice as fast,
#: S = 140 and 400 attend row by row 1.4 and 1.9 times as fast.
ROW_BY_ROW_BYTES = 96 * 1024


class KVCache:
    """Keys and values of one stage, for incremental decoding; preallocated, written in place.

    Per layer, ``k[l]`` and ``v[l]`` are (B, H, 1 + C, K): slot 0 is a spare that absorbs the
    writes of rows with nothing to add (so that updates need no host synchronisation) and slots
    1..C are a ring (a stage with a sliding window W needs only C = W). ``pos`` (B, 1 + C) holds
    the stage-sequence position stored in each slot (-1: empty) and ``length`` (B,) the
    positions written so far per row. ``filled``, a host integer, bounds the ring slots any row
    has used (a call adds the positions it could add, at most C; a caller that knows the rows'
    lengths on the host may lower it to the longest's, as eager decoding steps do): attention
    reads slots ``0 .. filled`` only, so a coarse stage, whose level gets a position every few
    bytes, reads the keys it has and not its whole capacity.

    Decoding may run a stage on some rows of the batch only (``rows``, (B',) int64: the stages
    of a level that only some rows reached); the other rows' slots are untouched.
    """

    def __init__(
        self, *, layers: int, batch: int, heads: int, head_dim: int, capacity: int, device: Any, dtype: torch.dtype
    ) -> None:
        shape = (batch, heads, capacity + 1, head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(layers)]
        self.pos = torch.full((batch, capacity + 1), -1, dtype=torch.long, device=device)
        self.length = torch.zeros(batch, dtype=torch.long, device=device)
        self.capacity = capacity
        self.filled = 0
        self.gathers = False  # always gather rows, never attend row by row (a compiled state's caches)
        self._gathered: tuple[Tensor, Tensor] | None = None  # buffers ``keys`` gathers rows into

    @property
    def used(self) -> int:
        """Slots attention reads: the spare and the ring slots written so far."""
        return 1 + self.filled

    def slots(self, valid: Tensor, rows: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """For new positions with (B, S) ``valid`` (of ``rows`` when given): their positions (B,
        S) and the slots they go to (B, S). Invalid ones, and valid ones that more recent positions
        of the same call push out of the ring, go to the spare slot 0. Valid positions must come
        first in a row."""
        length = self.length if rows is None else self.length[rows]
        s = valid.shape[1]
        positions = length[:, None] + torch.arange(s, device=valid.device)  # (B, S)
        end = (length + valid.sum(1))[:, None]  # (B, 1) length after this call
        keep = valid & (positions >= end - self.capacity)
        slots = torch.where(keep, positions % self.capacity + 1, 0)
        return positions, slots

    def write(self, layer: int, k: Tensor, v: Tensor, slots: Tensor, rows: Tensor | None = None) -> None:
        """Store (B, H, S, K) new keys and values at ``slots`` (B, S) (of ``rows`` when given)."""
        if rows is None:
            rows = torch.arange(k.shape[0], device=k.device)
        # An index_put, which torch.compile keeps in place (a scatter_ it would copy whole).
        self.k[layer][rows[:, None], :, slots] = k.transpose(1, 2)  # (B', S, H, K) at (row, slot)
        self.v[layer][rows[:, None], :, slots] = v.transpose(1, 2)

    def keys(self, layer: int, rows: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Layer ``layer``'s keys and values over the used slots, (B, H, ``used``, K) each (of
        ``rows`` when given: a copy of those rows' used slots, in buffers the next call reuses)."""
        k, v = self.k[layer][:, :, : self.used], self.v[layer][:, :, : self.used]
        if rows is None:
            return k, v
        if torch.compiler.is_compiling():
            return k.index_select(0, rows), v.index_select(0, rows)
        # Gathered into buffers kept from call to call (grown as needed): a fresh tensor of a few
        # megabytes each call costs more in page faults than the copy itself.
        shape = (rows.shape[0], *k.shape[1:])
        n = rows.shape[0] * k[0].numel()
        if self._gathered is None or self._gathered[0].numel() < n:
            size = min(2 * n, self.k[layer].numel())
            self._gathered = (k.new_empty(size), v.new_empty(size))
        k_rows = torch.index_select(k, 0, rows, out=self._gathered[0][:n].view(shape))
        v_rows = torch.index_select(v, 0, rows, out=self._gathered[1][:n].view(shape))
        return k_rows, v_rows

    def reads_by_row(self) -> bool:
        """Whether a step of some rows should attend row by row to views of this cache rather than
        to a copy of those rows (``keys`` with ``rows``): on a CPU, once a row's keys are long
        enough (``ROW_BY_ROW_BYTES``) that copying them costs more than one attention call per
        row. A GPU always gathers (a loop would be a launch per row and a host sync), and so do the
        caches of a compiled state (``gathers``; a loop over rows would break the graph), also when
        their steps run uncompiled to check or count them."""
        if self.gathers or torch.compiler.is_compiling():
            return False
        k = self.k[0]
        return k.device.type == "cpu" and k.shape[1] * self.used * k.shape[3] * k.element_size() >= ROW_BY_ROW_BYTES

    def row(self, layer: int, row: int) -> tuple[Tensor, Tensor]:
        """Layer ``layer``'s keys and values of one row over the used slots, (1, H, ``used``, K)
        views."""
        return self.k[layer][row : row + 1, :, : self.used], self.v[layer][row : row + 1, :, : self.used]

    def commit(self, positions: Tensor, slots: Tensor, valid: Tensor, rows: Tensor | None = None) -> None:
        """Record the new positions once every layer has written (the spare slot 0 keeps -1)."""
        stored = torch.where(slots > 0, positions, -1)
        if rows is None:
            self.pos.scatter_(1, slots, stored)
            self.length += valid.sum(1)
        else:
            self.pos[rows[:, None], slots] = stored
            self.length[rows] += valid.sum(1)
        self.filled = min(self.capacity, self.filled + valid.shape[1])


class DensePlan:
    """An explicit mask: (B or 1, 1, S_q, S_k) bool, True where a query may attend. Every backend
    accepts it; incremental decoding builds one from the KV cache's slot positions (one query, or a
    prompt's few, against the cache), and the ``math`` backend plans everything this way."""

    def __init__(self, mask: Tensor) -> None:
        self.mask = mask


def allowed(
    q_pos: Tensor, k_pos: Tensor, window: int | None, q_doc: Tensor | None = None, k_doc: Tensor | None = None
) -> Tensor:
    """The masking rule itself: (..., S_q, S_k) bool from (..., S_q) query and (..., S_k) key
    positions: k <= q, within ``window`` (q - k < window), same document, key present (k >= 0)."""
    q = q_pos[..., :, None]
    k = k_pos[..., None, :]
    ok = (k <= q) & (k >= 0)
    if window is not None:
        ok = ok & (q - k < window)
    if q_doc is not None:
        ok = ok & (q_doc[..., :, None] == k_doc[..., None, :])
    return ok


class AttentionBackend(nn.Module, ABC):
    """Scaled dot-product attention with this project's masking rule, planned by the backend.

    Rule: query s attends to keys s' <= s of the same document (``layout.doc``), and within
    ``window`` positions when a window is set (s - s' < window). Static padding only ever follows a
    row's real positions, so causality keeps real queries from seeing it.

    A backend turns a level's ``Layout`` into what its kernel needs with ``plan`` (a dense mask,
    SDPA's causal flag, a blockwise band, a FlexAttention ``BlockMask``, variable-length sequence
    offsets), once per level per forward: stages cache the plan on the layout, so every layer of the
    level's encoder and decoder shares it. ``forward`` then attends with it, and must also accept a
    ``DensePlan`` (incremental decoding). Inputs q, k, v are (B, H, S, K) after RoPE (k and v may
    have fewer heads, a divisor of H: grouped-query attention); the output is (B, H, S_q, K).
    The backend is chosen once, when the model is built; it never re-decides per call, and it
    never reads data back to the host.
    """

    @abstractmethod
    def plan(self, layout: Layout, *, batch: int, length: int, window: int | None, device: Any) -> Any:
        """What the kernel needs for causal attention over ``batch`` rows of ``length`` positions
        of a level laid out as ``layout``."""

    @abstractmethod
    def forward(self, q: Tensor, k: Tensor, v: Tensor, plan: Any) -> Tensor:
        """(B, H, S_q, K) attention output under ``plan`` (this backend's, or a ``DensePlan``)."""

    def planned(self, layout: Layout, *, batch: int, length: int, window: int | None, device: Any) -> Any:
        """``plan``, cached on the layout: the encoder and the decoder of a level (two stacks, two
        backend instances of one kind) share it."""
        key = ("plan", type(self), batch, length, window)
        if key not in layout.cache:
            layout.cache[key] = self.plan(layout, batch=batch, length=length, window=window, device=device)
        return layout.cache[key]


class Stage(nn.Module, ABC):
    """A causal sequence model at one level: (B, S, D) -> (B, S, D).

    Contract:
        * Output position s depends only on input positions <= s of the same row and document
          (plus cached positions during incremental decoding); never on padding.
        * Positions are the stage's own index (a coarse stage counts segments, not bytes).
        * Width is preserved (``self.dim``); the level decides it.
    """

    dim: int

    @abstractmethod
    def forward(self, x: Tensor, *, layout: Layout, cache: KVCache | None = None) -> Tensor:
        """(B, S, D) -> (B, S, D).

        With a ``cache``, x holds the next S positions of each row (``layout.valid`` (B, S) says
        which are real; real ones come first), which attend to the cached positions and to each
        other, and are appended to the cache.
        """

    @abstractmethod
    def new_cache(self, *, batch: int, capacity: int, device: Any, dtype: torch.dtype) -> KVCache:
        """An empty cache for ``batch`` rows of up to ``capacity`` positions (fewer may do: a
        sliding-window stage keeps only its window)."""

    def checkpointable(self) -> list[nn.Module]:
        """The sub-modules worth recomputing in the backward pass (activation checkpointing) and
        sharding one by one (FSDP2), in order: a transformer's blocks. None by default. A module
        the stage runs through methods other than ``forward`` names them in ``forward_methods``,
        so that a sharded one gathers its parameters for those calls too."""
        return []


class Pooler(nn.Module, ABC):
    """Contracting: the fine vectors of each segment become one coarse vector.

    Contract: ``forward(x, level)`` with x (B, T, D_in) and ``level`` a ``LevelIndex`` returns
    (B, S, D_out) where output s depends only on the positions j of segment s
    (``level.members[b, j] == s``: after boundary s - 1, up to boundary s, ``level.index[b, s]``,
    itself), of the same row. Padding slots (``level.valid`` False) may hold anything. No host
    synchronisation and no shape that depends on the data.

    Decoding feeds one position at a time: ``step(x, state, active=, boundary=)`` with x (B, 1,
    D_in) the new position of each ``active`` row, which closes its segment where ``boundary``;
    it returns (B, 1, D_out), the segment's vector where ``boundary``, and the state after (rows
    not active keep theirs; a closed segment starts afresh). It must give what ``forward`` gives.
    A pooler that reads the boundary alone (``select``) keeps no state: the default.
    """

    @abstractmethod
    def forward(self, x: Tensor, level: LevelIndex) -> Tensor:
        """(B, T, D_in) -> (B, S, D_out)."""

    def initial_state(self, *, batch: int, device: Any, dtype: torch.dtype) -> Any:
        """The state of an empty segment for ``batch`` rows (None: a stateless pooler)."""
        return None

    def step(self, x: Tensor, state: Any, *, active: Tensor, boundary: Tensor) -> tuple[Tensor, Any]:
        """One new position per row; see the class docstring."""
        return self.forward(x, one_position(x.shape[0], x.device, boundary)), state


class Upsampler(nn.Module, ABC):
    """Expanding: coarse vectors back onto the fine positions (docs/method.md section 4).

    Contract: ``forward(coarse, segment, offset)`` with coarse (B, S, D_coarse), segment (B, T)
    int64 and offset (B, T) int64 returns (B, T, D_fine) where output j depends only on
    ``coarse[b, segment[b, j]]`` and ``offset[b, j]``. The assembler passes as ``segment`` the
    last boundary at or before j and as ``offset`` the distance from it, so fine position j only
    ever sees coarse vectors pooled at or before j: this is what makes the model causal.
    """

    @abstractmethod
    def forward(self, coarse: Tensor, segment: Tensor, offset: Tensor) -> Tensor:
        """(B, S, D_coarse), (B, T), (B, T) -> (B, T, D_fine)."""

    def prepare(self, coarse: Tensor) -> Tensor | None:
        """For incremental decoding: what ``pick`` needs to upsample each row's one coarse vector
        (B, 1, D_coarse) at any offset, when computing it once per coarse position is cheaper than
        upsampling again at every fine one (decoding keeps it until the row's next coarse
        position); None, the default, where it is not: decoding calls ``forward`` every step.
        The result is a new tensor of its own, rows first: decoding keeps it and may overwrite
        rows of it in place."""
        return None

    def pick(self, prepared: Tensor, offset: Tensor) -> Tensor:
        """(B, T, D_fine): ``forward(coarse, 0, offset)`` from ``prepare(coarse)``'s rows and (B, T)
        offsets."""
        raise NotImplementedError(f"{type(self).__name__} prepares nothing, so it picks nothing")


class Routing(NamedTuple):
    """A router's decision over positions of the level below.

    Attributes:
        prob: (B, S) float in [0, 1], the probability that each position closes a segment of the
            level above; differentiable (the assembler passes gradient to it through the
            confidence's straight-through estimator and the smoothing).
        boundary: (B, S) bool, whether it does. A boundary's ``prob`` is at least 0.5 and a
            non-boundary's below it: the confidence of a decision is ``prob`` or ``1 - prob``.
    """

    prob: Tensor
    boundary: Tensor


class Router(nn.Module, ABC):
    """Learned boundaries: reads the encoder output of level i and decides which of its positions
    close a segment of level i + 1 (docs/method.md section 10).

    Contract: ``forward(x, layout)`` with x (B, S, D) returns a ``Routing`` where position s
    depends only on positions <= s of the same row (and document, ``layout.doc``): the decision
    for a position is made the moment it exists, which keeps the model causal and lets decoding
    decide, from the new position's state alone, which levels a step reaches. No host
    synchronisation and no shape that depends on the data. The assembler forces every document
    start and every row's first position to a boundary (as it does for splitters), keeps at most
    the level's static capacity of boundaries (counting the rest as dropped) and, where
    ``smooth`` is true, smooths the coarse vectors with ``prob`` on the way back (an EMA:
    z_s <- P_s z_s + (1 - P_s) z_{s-1}, P_s the probability at segment s's boundary).

    Decoding feeds one position at a time: ``step(x, state, active=)`` with x (B, 1, D) returns
    the new position's ``Routing`` (B, 1) and the state after it (rows not ``active`` keep
    theirs); it must equal ``forward``. ``state_after(x, count)`` is the state after the first
    ``count`` (B,) positions of each row of a prompt.
    """

    #: Smooth the level's coarse vectors with the boundary probabilities (H-Net's EMA).
    smooth: bool = False

    @abstractmethod
    def forward(self, x: Tensor, layout: Layout) -> Routing:
        """(B, S, D) -> Routing of (B, S)."""

    @abstractmethod
    def initial_state(self, *, batch: int, device: Any, dtype: torch.dtype) -> Any:
        """The state before the first position of ``batch`` rows."""

    @abstractmethod
    def step(self, x: Tensor, state: Any, *, active: Tensor) -> tuple[Routing, Any]:
        """One new position per row; see the class docstring."""

    def state_after(self, x: Tensor, count: Tensor) -> Any:
        """The state after each row's first ``count`` positions of x (B, S, D): by default, every
        position stepped through in turn (a router with a cheaper answer overrides it)."""
        b = x.shape[0]
        state = self.initial_state(batch=b, device=x.device, dtype=x.dtype)
        for t in range(x.shape[1]):
            _, state = self.step(x[:, t : t + 1], state, active=t < count)
        return state

    def loss(self, routing: Routing, valid: Tensor | None) -> Tensor:
        """The router's auxiliary loss over the real positions (``valid`` (B, S), None: all),
        weighted as its spec says; a scalar the trainer adds to the next-byte loss. Zero by
        default."""
        return routing.prob.new_zeros(())


def where_rows(mask: Tensor, new: Tensor, old: Tensor) -> Tensor:
    """``new`` in the rows where (B,) ``mask``, else ``old`` (any trailing shape)."""
    return torch.where(mask.view(-1, *([1] * (new.dim() - 1))), new, old)


def gather_rows(x: Tensor, index: Tensor) -> Tensor:
    """``out[b, s] = x[b, index[b, s]]``: (B, T, D), (B, S) -> (B, S, D); no host sync."""
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
