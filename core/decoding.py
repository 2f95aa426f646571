"""Incremental decoding with per-stage KV caches (docs/method.md section 5).

Every stage keeps its own cache. A prompt is prefilled in one walk over the U-Net, or in chunks
(``prefill_chunks``: each later chunk a walk that continues the rows in the state). Then each new
byte runs the byte-level encoder and decoder; stage i (encoder, or the trunk at the top, and
decoder) runs only when the byte's level is at least i, which the streaming splitter decides in
O(1) the moment the byte exists. A decoder whose level did not get a new coarse position reuses
the last coarse output, at the next offset: exactly what the teacher-forced forward computes, so
the logits agree to float rounding (the tests hold them to 1e-5). The final RMSNorm is applied on
both paths.

Both the prefill and a step are walks of ``AUNet.walk`` with their own plan (``Prefill`` and
``Step`` here), so the contracting and expanding paths are written once, in the assembler.

Rows of a batch may have prompts of different lengths (right-padded; each row keeps its own
lengths per level) and may stop at different times (EOS or a stop sequence); a finished row can
take a new prompt, prefilled apart and put in its place (``splice``). Steps run one of three ways
(``StepMode``): eager, where a level's stages compute only the rows that reached it and attention
reads only the cache slots used so far; static, every shape fixed; compiled, fixed shapes in
buckets of rows and of used slots under ``torch.compile`` (captured as CUDA graphs on a GPU). The generation
loop that picks bytes and feeds the streaming splitters is ``aunet.jobs.inference.generate``.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import sys
import types
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs
import torch
from torch import Tensor

from aunet.core.model import AUNet, Part, TeacherForced, WalkPlan, boundary_index
from aunet.core.modules import KVCache, Layout, LevelIndex, one_position


class StepMode(enum.Enum):
    """How decoding steps run.

    ``eager``: shapes follow the data: each stage reads only the cache slots used so far and
    computes only the rows that reached its level (the fewest FLOPs, shapes that change).
    ``static``: every shape stays the same from step to step (each stage reads all its slots and
    computes every row, masked), so a step allocates the same tensors however long the text.
    ``compiled``: fixed shapes, with the step's tensor work under ``torch.compile``: each cache
    reads a bucket of slots (``read_bucket``: the used ones rounded up, at most a quarter more)
    rather than all, and the stages above level 0 run on a bucket of rows (``_row_bucket``: the
    rows that reached the level and idle ones up to a power of two) rather than all; one graph
    per highest level a step reaches and buckets, made by the first step that needs it (seconds
    each, and many over a long text: aunet2-tiny at 16 rows makes 38 for 200 bytes after a 64-byte
    prompt). A model with a routed level keeps static's shapes (``step``).
    """

    EAGER = "eager"
    STATIC = "static"
    COMPILED = "compiled"


STEP_MODES = tuple(mode.value for mode in StepMode)


@attrs.define(eq=False)
class DecodeState:
    """Caches and per-level bookkeeping of a batch being decoded (B rows, levels 0..L)."""

    caches: dict[tuple[int, Part], KVCache]  # every stack: encoders and decoders 0..L-1, the trunk
    count: list[Tensor]  # (B,) positions so far at each level 0..L
    boundary: list[Tensor | None]  # level i >= 1: (B,) level-(i-1) index of the last level-i position
    last_out: list[Tensor | None]  # level i >= 1: (B, D_i) top-stack output at the last level-i position
    stage_calls: list[int]  # steps that ran each level's stages (the trunk at L), after the prefill
    pool_states: list[Any]  # level i < L: the pooler's state of level i's open segment
    level_logits: Tensor | None = None  # (B, L + 1) the level head's logits for the next position
    router_states: dict[int, Any] = attrs.field(factory=dict)  # routed level i: its router's state
    recent: Tensor | None = None  # (B, lookback) each row's last ids, for its n-gram embeddings
    # upsampler i (level i + 1 -> i) that prepares: what it prepared from each row's last coarse vector
    prepared: dict[int, Tensor] = attrs.field(factory=dict)
    mode: StepMode = StepMode.EAGER  # how steps run
    # ``count`` of the levels the splitters decide (0..L less the routed ones), per row, on the
    # host: eager steps bound the slots each cache reads by it. None: read back at the next step
    # (after a prefill, a chunk or a splice, which change counts on the device).
    known: list[list[int]] | None = None


def _inference(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``fn`` (whose first argument is the model, or the state) under ``torch.inference_mode``:
    no autograd bookkeeping on any tensor it makes, views included, which a step makes dozens of
    (against ``no_grad``, a one-row CPU step of aunet2-tiny is 19% faster, a 16-row one 9%). An
    eager or static state's tensors are inference tensors, changed only here. A tensor ``fn``
    returns is copied outside, so that callers get an ordinary tensor that they may change in place.

    Two kinds of decoding run under ``no_grad`` and outside inference mode instead (even in a
    caller's ``torch.inference_mode()``), from their state's making to its last step, so that their
    states hold ordinary tensors: a model sharded with FSDP2 (``_sharded``), and compiled steps,
    for which inference mode saves nothing (the compiled graph keeps no bookkeeping either) and
    where inference tensors captured in CUDA graphs are a known source of failures in torch (its
    issues 135892, 166792)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        if _plain(args, kwargs):
            with torch.inference_mode(False), torch.no_grad():
                out = fn(*args, **kwargs)
        else:
            with torch.inference_mode():
                out = fn(*args, **kwargs)
        return out.clone() if isinstance(out, Tensor) else out

    return run


def _plain(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether a decoding call (``new_state``'s, or one given a state, by position or by name)
    runs under ``no_grad`` rather than inference mode: a sharded model, or a state whose steps are
    compiled."""
    if _sharded(args[0] if args else kwargs.get("model")):
        return True
    state = next((a for a in (*args, *kwargs.values()) if isinstance(a, DecodeState)), None)
    mode = state.mode if state is not None else StepMode(kwargs.get("mode", StepMode.EAGER))
    return mode is StepMode.COMPILED


def _sharded(model: Any) -> bool:
    """Whether ``model`` is sharded with FSDP2 (its root, as ``aunet``'s trainer shards it): such a
    model decodes under ``no_grad``, since FSDP keeps its parameters' version counters across an
    unshard, and parameters it first gathers under inference mode have none."""
    fsdp = sys.modules.get("torch.distributed.fsdp")  # no model is sharded before it is imported
    return fsdp is not None and isinstance(model, fsdp.FSDPModule)


@_inference
def new_state(model: AUNet, batch: int, capacity: int, *, mode: StepMode = StepMode.EAGER) -> DecodeState:
    """Empty caches for ``batch`` rows of up to ``capacity`` positions per level, for steps run
    the ``mode`` way."""
    param = next(model.parameters())
    args = {"batch": batch, "capacity": capacity, "device": param.device, "dtype": param.dtype}
    depth = model.depth
    caches = {(depth, Part.TRUNK): model.trunk.new_cache(**args)}
    for i in range(depth):
        caches[(i, Part.ENCODER)] = model.encoders[i].new_cache(**args)
        caches[(i, Part.DECODER)] = model.decoders[i].new_cache(**args)
    state = DecodeState(
        caches=caches,
        count=[torch.zeros(batch, dtype=torch.long, device=param.device) for _ in range(depth + 1)],
        boundary=[None] * (depth + 1),
        last_out=[None] * (depth + 1),
        stage_calls=[0] * (depth + 1),
        pool_states=[
            model.poolers[i].initial_state(batch=batch, device=param.device, dtype=param.dtype) for i in range(depth)
        ],
    )
    state.mode = mode
    if mode is not StepMode.EAGER:
        for cache in caches.values():
            cache.filled = cache.capacity  # every slot read from the start: fixed shapes
    if mode is StepMode.COMPILED:
        for cache in caches.values():
            cache.gathers = True  # as its graphs do, also under ``shapes_only``
            if param.device.type == "cuda":
                # CUDA graphs replay at fixed addresses: the caches, written in place every step,
                # are marked static (as parameters are) so that the graphs capture their writes.
                for t in (*cache.k, *cache.v, cache.pos, cache.length):
                    torch._dynamo.mark_static_address(t)
    return state


_COMPILED: weakref.WeakKeyDictionary[AUNet, dict[tuple[int, ...], Any]] = weakref.WeakKeyDictionary()
_UNCOMPILED = [False]  # within ``shapes_only``


@contextlib.contextmanager
def shapes_only() -> Iterator[None]:
    """Within it, compiled steps run their tensor work uncompiled, with the shapes they compile
    (their buckets of rows and of cache slots): what checks those shapes' logits without a graph
    compiled per bucket (the conformance kits), and what counts the bytes they read (a dispatch
    mode sees nothing inside a compiled graph: ``python -m benchmarks generate``). It holds for
    the whole process, every thread, until it exits."""
    before = _UNCOMPILED[0]
    _UNCOMPILED[0] = True
    try:
        yield
    finally:
        _UNCOMPILED[0] = before


def compiled_advance(model: AUNet, batch: int, top: int, reads: tuple[int, ...], rows: tuple[int, ...]) -> Any:
    """``_advance`` under ``torch.compile`` for ``model`` decoding ``batch`` rows in steps that
    reach level ``top``, with the caches of levels 0..``top`` reading ``reads`` slots and each
    level's stages running on ``rows`` of them (-1: all): one graph, made by the first such step
    (a few seconds) and kept for the model's life. Each has a code object of its own, so that no
    graph counts against another's recompile limit or pushes it out to eager (where the step has
    no graph break: a routed level's has one, hence its static shapes)."""
    if _UNCOMPILED[0]:
        return _advance
    made = _COMPILED.setdefault(model, {})
    key = (batch, top, reads, rows)
    if key not in made:
        code = _advance.__code__.replace(co_name=f"_advance_{len(made)}_{id(model):x}")
        fresh = types.FunctionType(code, _advance.__globals__, code.co_name, _advance.__defaults__)
        # On CUDA each graph is also captured as a CUDA graph (one launch per step).
        mode = "reduce-overhead" if next(model.parameters()).device.type == "cuda" else None
        made[key] = torch.compile(fresh, dynamic=False, mode=mode)
    return made[key]


def read_bucket(positions: int, capacity: int) -> int:
    """The ring slots a compiled step reads when ``positions`` are in use: ``positions`` rounded
    up to a quarter of its power of two (64 at least; 577 reads 640, 106 reads 112), and never
    more than ``capacity``. A compiled graph has fixed shapes, so it reads a bucket of slots: at
    most a quarter more than eager steps, which read the used ones, and a new graph per bucket
    (at most four per doubling of the text), where reading every slot would cost a 1,024-position
    cache four times the reads of a 256-byte prompt's."""
    if positions <= 64:
        return min(64, capacity)
    quarter = 1 << ((positions - 1).bit_length() - 3)
    return min(-(-positions // quarter) * quarter, capacity)


@_inference
def prefill(
    model: AUNet, state: DecodeState, tokens: Tensor, levels: Tensor, lengths: Tensor, *, every_position: bool = False
) -> Tensor:
    """Run right-padded prompts (B, P) through every stage, filling the caches; (B, V) logits of
    each row's last real position, or with ``every_position`` (B, P, V) logits of every position
    (what a caller that also scores the prompt needs: the Hugging Face wrapper's first call)."""
    b, p = tokens.shape
    depth = model.depth
    rows = torch.arange(b, device=tokens.device)
    valid = torch.arange(p, device=tokens.device)[None] < lengths[:, None]  # (B, P)
    plan = TeacherForced(model.top_levels(tokens, levels), [None] * depth, doc=None, valid=valid, caches=state.caches)
    h = model.walk(model.embed_tokens(tokens), plan)  # (B, P, D_0)
    if model.ngram is not None:
        state.recent = model.ngram.recent(tokens, lengths)  # (B, lookback)
    logits = _heads(model, state, h[rows, lengths - 1])  # (B, V)
    if every_position:
        logits = model.head(model.norm(h))  # (B, P, V)
    for i in range(depth + 1):
        state.count[i] = plan.layouts[i].valid.sum(1)
    state.known = None
    for i in range(1, depth + 1):
        last = state.count[i] - 1
        state.last_out[i] = plan.outputs[i][rows, last]  # (B, D_i)
        state.boundary[i] = plan.maps[i - 1].index[rows, last]
    _prepare_upsamplers(model, state)
    for i in range(depth):
        state.pool_states[i] = _open_segment(
            model.poolers[i], state.pool_states[i], plan.encoded[i], start=state.boundary[i + 1] + 1, end=state.count[i]
        )
        router = model.router(i + 1)
        if router is not None:
            state.router_states[i + 1] = router.state_after(plan.encoded[i], state.count[i])
    return logits


def chunk_refusal(model: AUNet) -> str | None:
    """Why ``model``'s prompts cannot be prefilled in chunks, or None when they can: a routed
    level's boundaries come from its router reading the whole chunk, which a continued chunk does
    not give it."""
    routed = [i + 1 for i, r in enumerate(model.routed) if r]
    if routed:
        return f"level {routed[0]} is routed (its router decides boundaries over whole prompts)"
    return None


@_inference
def prefill_chunks(
    model: AUNet, state: DecodeState, tokens: Tensor, levels: Tensor, lengths: Tensor, *, chunk: int
) -> Tensor:
    """``prefill`` of right-padded prompts (B, P) in walks of ``chunk`` positions: the first
    chunk as a prompt, each later one continuing the rows in ``state`` (``extend``). Attention
    masks and activations are those of ``chunk`` positions against the cache, not of the whole
    prompt against itself; the logits and the state are the whole prefill's (to float rounding).
    ``chunk_refusal`` names the models that cannot."""
    reason = chunk_refusal(model)
    if reason is not None:
        raise ValueError(f"cannot prefill this model in chunks: {reason}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1 position, got {chunk}")
    p = tokens.shape[1]
    first = min(chunk, p)
    logits = prefill(model, state, tokens[:, :first], levels[:, :first], lengths.clamp(max=first))
    for start in range(first, p, chunk):
        end = min(start + chunk, p)
        more = (lengths - start).clamp(min=0, max=end - start)  # (B,) positions of each row here
        if not bool((more > 0).any()):
            break
        logits = extend(model, state, tokens[:, start:end], levels[:, start:end], more, logits)
    return logits


@_inference
def extend(model: AUNet, state: DecodeState, tokens: Tensor, levels: Tensor, lengths: Tensor, logits: Tensor) -> Tensor:
    """Continue the rows of ``state`` by right-padded positions (B, P) (``lengths`` (B,) of them,
    0 for a row with nothing more) with their levels, in one walk; (B, V) logits after each row's
    last position (``logits``, the ones before, for rows with nothing more)."""
    b, p = tokens.shape
    rows = torch.arange(b, device=tokens.device)
    valid = torch.arange(p, device=tokens.device)[None] < lengths[:, None]  # (B, P)
    before = [count.clone() for count in state.count]
    filled = {key: cache.filled for key, cache in state.caches.items()}
    plan = Continued(state, levels.long(), valid)
    h = model.walk(model.embed_tokens(tokens, before=state.recent), plan)  # (B, P, D_0)
    for key, cache in state.caches.items():
        # A stage bounds the slots it used by the positions a call could add (no host sync), which
        # over chunks adds up to the widest rows'; a prefill may read the lengths back instead.
        cache.filled = max(filled[key], min(cache.capacity, int(cache.length.max())))
    if model.ngram is not None:
        lookback = state.recent.shape[1]
        state.recent = model.ngram.recent(torch.cat([state.recent, tokens], dim=1), lengths + lookback)
    more = lengths > 0
    level_logits = state.level_logits
    new = _heads(model, state, h[rows, (lengths - 1).clamp(min=0)])  # (B, V)
    if level_logits is not None:
        state.level_logits = torch.where(more[:, None], state.level_logits, level_logits)
    state.known = None
    for i in range(plan.top + 1):
        got = plan.layouts[i].valid.sum(1)  # (B,) new level-i positions per row
        state.count[i] = before[i] + got
        if i == 0:
            continue
        last = (got - 1).clamp(min=0)
        reached = got > 0
        state.last_out[i] = torch.where(reached[:, None], plan.outputs[i][rows, last], state.last_out[i])
        boundary = before[i - 1] + plan.maps[i - 1].index[rows, last]  # a level-(i-1) index
        state.boundary[i] = torch.where(reached, boundary, state.boundary[i])
    _prepare_upsamplers(model, state)
    return torch.where(more[:, None], new, logits)


def _prepare_upsamplers(model: AUNet, state: DecodeState) -> None:
    """What each upsampler that prepares keeps from every row's last coarse vector (after a
    prefill; steps then prepare again only for the rows that get a new one)."""
    for i, upsampler in enumerate(model.upsamplers):
        kept = upsampler.prepare(state.last_out[i + 1][:, None])
        if kept is not None:
            state.prepared[i] = kept


class Continued(TeacherForced):
    """The plan of a walk that continues rows already in a decoding state (a later chunk of a
    prompt): each level's positions before its first boundary in the chunk belong to the segment
    the state left open, whose coarse vector (the state's last output) and offsets come from the
    state; a stateful pooler continues from the state's open segment."""

    def __init__(self, state: DecodeState, levels: Tensor, valid: Tensor) -> None:
        depth = len(state.count) - 1
        super().__init__(levels, [None] * depth, doc=None, valid=valid, caches=state.caches)
        self.state = state
        self.expands: list[LevelIndex] = []

    def boundaries(self, level: int) -> Tensor:
        """(B, S_level) bool: the chunk's positions of ``level`` that close a segment of level + 1."""
        return (self.lv > level) & self.layouts[level].valid

    def pool(self, level: int, h: Tensor, pooler: Any, router: Any) -> Tensor | None:
        self.encoded[level] = h
        is_boundary = self.boundaries(level)  # (B, S_level)
        if level < self.top and not bool(is_boundary.any()):
            self.top = level  # no row's chunk reaches level + 1: the walk turns here
        if level >= self.top:
            self._carry_open_segment(level, h, pooler, is_boundary)
            return None
        m = self.contract(level, h, router)
        pooled = pooler(h, m)  # (B, S_{level+1}, D): right but for the first, open segment's
        first = self._carry_open_segment(level, h, pooler, is_boundary)
        if first is None:  # stateless: a boundary's vector is its own (the kits hold step to forward)
            return pooled
        fixed = torch.where(is_boundary.any(1)[:, None], first, pooled[:, 0])
        return torch.cat([fixed[:, None], pooled[:, 1:]], dim=1)

    def _carry_open_segment(self, level: int, h: Tensor, pooler: Any, is_boundary: Tensor) -> Tensor | None:
        """A stateful pooler's part in a chunk: it steps from the state's open segment up to each
        row's first boundary in the chunk (all its positions where there is none), whose pooled
        vector (B, D) it returns, then through the positions after the row's last boundary, which
        leave the new open segment in the state. None for a stateless pooler."""
        s = self.state
        state = s.pool_states[level]
        if state is None:
            return None
        b, p = is_boundary.shape
        valid = self.layouts[level].valid
        length = valid.sum(1)  # (B,)
        found = is_boundary.any(1)
        first = torch.where(found, is_boundary.long().argmax(1), length - 1)  # (B,)
        last = torch.where(found, p - 1 - is_boundary.flip(1).long().argmax(1), length - 1)
        pooled = None
        for t in range(int(first.max()) + 1 if b else 0):  # a host sync; a prefill is eager anyway
            active = valid[:, t] & (t <= first)
            out, state = pooler.step(h[:, t : t + 1], state, active=active, boundary=is_boundary[:, t] & active)
            pooled = out[:, 0] if pooled is None else torch.where((t == first)[:, None], out[:, 0], pooled)
        s.pool_states[level] = _open_segment(pooler, state, h, start=torch.where(found, last + 1, length), end=length)
        return pooled

    def contract(self, level: int, h: Tensor, router: Any) -> LevelIndex:
        s = self.state
        is_boundary = self.boundaries(level)  # (B, S_level)
        # A boundary before the chunk (the open segment's start) makes column 0 of the index.
        b = is_boundary.shape[0]
        start = torch.ones(b, 1, dtype=torch.bool, device=is_boundary.device)
        m = boundary_index(torch.cat([start, is_boundary], dim=1), None)
        index, valid = (m.index[:, 1:] - 1).clamp(min=0), m.valid[:, 1:]  # the chunk's boundaries
        segment, offset = m.segment[:, 1:], m.offset[:, 1:]  # 0: the open segment
        open_offset = (s.count[level] - s.boundary[level + 1] - 1)[:, None] + offset
        offset = torch.where(segment == 0, open_offset, offset)
        self.expands.append(m._replace(segment=segment, offset=offset))
        # For the pooler: the chunk's boundaries (segment -1: the open segment, pooled by state).
        pooled = LevelIndex(index, valid, segment - 1, offset, m.kept - b, m.dropped, m.members[:, 1:] - 1)
        self.maps.append(pooled)
        self.lv = torch.gather(self.lv, 1, index).masked_fill(~valid, 0)
        self.real.append(valid)
        self.layouts.append(Layout(valid=valid))
        return pooled

    def expand(self, level: int) -> LevelIndex:
        if level < len(self.expands):
            return self.expands[level]
        # A level no row's chunk reaches: every position is in the open segment.
        s = self.state
        p = self.layouts[level].valid.shape[1]
        offset = (s.count[level] - s.boundary[level + 1])[:, None] + torch.arange(p, device=s.count[level].device)
        return one_position(offset.shape[0], offset.device)._replace(segment=torch.zeros_like(offset), offset=offset)

    def coarse(self, level: int, fresh: Tensor | None) -> Tensor:
        carried = self.state.last_out[level][:, None]  # (B, 1, D): the open segment's vector
        if fresh is None:
            return carried
        self.outputs[level] = fresh
        return torch.cat([carried, fresh], dim=1)  # (B, 1 + S, D)


def _open_segment(pooler: Any, pool_state: Any, encoded: Tensor, *, start: Tensor, end: Tensor) -> Any:
    """A stateful pooler's state after a prompt: it steps through each row's positions after the
    last boundary (``start`` to ``end``, (B,)), which no coarse position closes yet."""
    if pool_state is None:
        return None
    rows = torch.arange(encoded.shape[0], device=encoded.device)
    longest = int((end - start).max())  # a host sync; the prefill is eager anyway
    never = torch.zeros_like(start, dtype=torch.bool)
    for t in range(longest):
        active = start + t < end
        position = (start + t).clamp(max=encoded.shape[1] - 1)
        _, pool_state = pooler.step(encoded[rows, position][:, None], pool_state, active=active, boundary=never)
    return pool_state


class Step(WalkPlan):
    """The plan of one decoding step: one new level-0 position per row, which is a new position
    of every level up to its own; levels above reuse their last output."""

    def __init__(self, state: DecodeState, active: list[Tensor], top: int, rows: list[Tensor | None]) -> None:
        self.state = state
        self.active = active  # per level, (B,) bool: rows that get a new position there
        self.top = top
        self.rows = rows  # per level, the rows whose stages run (None: every row)
        self.layouts: dict[int, Layout] = {}  # one per level: its encoder and decoder share it
        self.smoothing: dict[int, Tensor] = {}  # routed level -> (B,) P of its new positions

    def layout(self, level: int) -> Layout:
        if level not in self.layouts:
            self.layouts[level] = Layout(valid=self.active[level][:, None], rows=self.rows[level])
        return self.layouts[level]

    def cache(self, level: int, part: Part) -> KVCache | None:
        return self.state.caches[(level, part)]

    def pool(self, level: int, h: Tensor, pooler: Any, router: Any) -> Tensor | None:
        # The new level-`level` position of the rows active there; where it is also a level-(level+1)
        # position it is that segment's boundary, and closes it.
        s = self.state
        if router is not None:
            # The router decides on the new position alone whether it reaches level + 1; the
            # walk goes no higher than the highest level some row reaches (read on the host).
            routing, s.router_states[level + 1] = router.step(h, s.router_states[level + 1], active=self.active[level])
            self.active[level + 1] = self.active[level] & routing.boundary[:, 0]
            if router.smooth:
                self.smoothing[level + 1] = routing.prob[:, 0]
            if self.top > level and not bool(self.active[level + 1].any()):
                self.top = level
        closes = self.active[level + 1]
        if level >= self.top and s.pool_states[level] is None:
            return None  # a stateless pooler has nothing to remember of a position that closes nothing
        out, s.pool_states[level] = pooler.step(h, s.pool_states[level], active=self.active[level], boundary=closes)
        if level >= self.top:
            return None
        s.boundary[level + 1] = torch.where(closes, s.count[level], s.boundary[level + 1])
        return out

    def expand(self, level: int) -> LevelIndex:
        s = self.state
        offset = (s.count[level] - s.boundary[level + 1])[:, None]  # (B, 1) from the segment's boundary
        return one_position(offset.shape[0], offset.device, self.active[level + 1])._replace(offset=offset)

    def upsample(self, level: int, upsampler: Any, coarse: Tensor, index: LevelIndex) -> Tensor:
        # An upsampler that prepares (the multi-linear one: every offset's matrix at once) does
        # so once per coarse position, for the rows that got one, and then only picks.
        s = self.state
        kept = s.prepared.get(level)
        if kept is None:
            return upsampler(coarse, index.segment, index.offset)
        if level + 1 <= self.top:  # some rows got a new coarse position
            rows = self.rows[level + 1]
            if rows is None:
                fresh = self.active[level + 1].view(-1, *[1] * (kept.dim() - 1))
                kept = torch.where(fresh, upsampler.prepare(coarse), kept)
            elif s.mode is StepMode.EAGER:  # the rows that reached the level, in place
                kept.index_copy_(0, rows, upsampler.prepare(coarse.index_select(0, rows)))
            else:  # compiled: a bucket of rows, some of which keep theirs; the state stays functional
                fresh = self.active[level + 1].index_select(0, rows).view(-1, *[1] * (kept.dim() - 1))
                new = torch.where(fresh, upsampler.prepare(coarse.index_select(0, rows)), kept.index_select(0, rows))
                kept = kept.index_copy(0, rows, new)
            s.prepared[level] = kept
        return upsampler.pick(kept, index.offset)

    def coarse(self, level: int, fresh: Tensor | None) -> Tensor:
        s = self.state
        if fresh is not None:
            new = fresh[:, 0]
            if level in self.smoothing:  # H-Net's EMA, one step: P z + (1 - P) zbar_before
                p = self.smoothing[level].float()[:, None]
                new = (p * new.float() + (1 - p) * s.last_out[level].float()).to(new.dtype)
            s.last_out[level] = torch.where(self.active[level][:, None], new, s.last_out[level])
        return s.last_out[level][:, None]  # (B, 1, D_level)


@_inference
def step(model: AUNet, state: DecodeState, token: Tensor, level: Sequence[int], alive: Sequence[bool]) -> Tensor:
    """Append one token per row (B,) with its level; (B, V) logits of the next token. Rows not
    ``alive`` (finished) are carried along without changing their caches."""
    depth = model.depth
    device = token.device
    ruled = depth - sum(model.routed)  # levels 1..ruled come from splitters, the rest from routers
    active_host = [
        [bool(a) and (i == 0 or (i <= ruled and lv >= i)) for a, lv in zip(alive, level)] for i in range(depth + 1)
    ]
    active = [torch.tensor(a, device=device) for a in active_host]  # (B,) per level; routers fill theirs
    top = max(i for i in range(depth + 1) if any(active_host[i]) or i == 0)
    if top == ruled:  # the routers decide, in the walk, how far above it goes
        top = depth
    # A level's stages run on the rows that reached it alone (a trunk at a word boundary of one
    # row in sixteen computes one row, not sixteen); routed levels, decided in the walk, on all.
    # A static state keeps every shape fixed: all rows, masked.
    # Compiled steps run in buckets of rows and cache slots, but for a model with a routed level:
    # the walk reads the router's decision on the host, which breaks the graph, and the frames
    # after the break, shared by every bucket's graph, would soon reach torch's recompile limit
    # and run eagerly; such a model's compiled steps keep static's shapes.
    buckets = state.mode is StepMode.COMPILED and ruled == depth
    if state.mode is StepMode.EAGER:
        rows = [None if i > ruled else _rows(active_host[i], device) for i in range(depth + 1)]
    elif buckets:  # every row at level 0; a bucket of rows above
        rows = [None if i == 0 else _row_bucket(active_host[i], device) for i in range(depth + 1)]
    else:
        rows = [None] * (depth + 1)
    if state.mode is not StepMode.COMPILED:
        logits, top = _advance(model, state, token, active, top, rows)
    else:
        sizes = tuple(-1 if r is None else r.shape[0] for r in rows)
        reads = _bucket_reads(model, state, top) if buckets else ()
        advance = compiled_advance(model, token.shape[0], top, reads, sizes)
        if token.device.type == "cuda":
            # A CUDA graph's outputs live in its pool and the next replay overwrites them: the
            # state keeps copies (the step's logits are copied for the caller by ``_inference``).
            torch.compiler.cudagraph_mark_step_begin()
            logits, top = advance(model, state, token, active, top, rows)
            _own_outputs(state)
        else:
            logits, top = advance(model, state, token, active, top, rows)
    for i in range(top + 1):
        state.stage_calls[i] += 1
    if state.mode is StepMode.EAGER:
        _bound_reads(model, state, active_host, ruled, top)
    elif buckets:
        _count_known(state, active_host, ruled, top)
    return logits


def _known_counts(state: DecodeState, ruled: int) -> list[list[int]]:
    """``state.known``, read back from the device after a prefill, a chunk or a splice."""
    if state.known is None:
        state.known = [count.tolist() for count in state.count[: ruled + 1]]
    return state.known


def _count_known(state: DecodeState, active: list[list[bool]], ruled: int, top: int) -> None:
    """Add a step's ``active`` positions to the host counts of levels 0..``ruled`` (no row got a
    position above the walk's ``top``)."""
    known = _known_counts(state, ruled)
    for i in range(min(ruled, top) + 1):
        known[i] = [n + a for n, a in zip(known[i], active[i])]


def _level_caches(model: AUNet, state: DecodeState, level: int) -> list[KVCache]:
    """The caches of ``level``'s stages: its encoder's and decoder's, or the trunk's."""
    parts = (Part.TRUNK,) if level == model.depth else (Part.ENCODER, Part.DECODER)
    return [state.caches[(level, part)] for part in parts if state.caches[(level, part)] is not None]


def _bound_reads(model: AUNet, state: DecodeState, active: list[list[bool]], ruled: int, top: int) -> None:
    """Tighten the slots the caches of levels 0..``ruled`` read to the longest row's (host
    counts, after a step that added ``active`` positions). A cache bounds them by the positions a
    call could add, which grows by one whenever any row reaches the level: at 64 rows the trunk
    runs at nearly every byte, and would read every row's slots up to the prompt's longest plus
    one per step."""
    if state.known is None:
        _known_counts(state, ruled)  # read back: this step's positions included
    else:
        _count_known(state, active, ruled, top)
    for i in range(min(ruled, top) + 1):
        longest = max(state.known[i], default=0)
        for cache in _level_caches(model, state, i):
            cache.filled = min(cache.filled, cache.capacity, longest)


def _bucket_reads(model: AUNet, state: DecodeState, top: int) -> tuple[int, ...]:
    """Before a compiled step reaching ``top`` (of a model with no routed level): the slots each
    cache of levels 0..``top`` reads, a ``read_bucket`` of the longest row's positions once this
    step's are in (host counts)."""
    known = _known_counts(state, model.depth)
    reads = []
    for i in range(top + 1):
        for cache in _level_caches(model, state, i):
            # ``filled`` before the step's commit, which adds one: the plan and the reads are
            # then over the spare slot and the bucket's.
            cache.filled = read_bucket(max(known[i], default=0) + 1, cache.capacity) - 1
            reads.append(cache.filled)
    return tuple(reads)


def _advance(
    model: AUNet, state: DecodeState, token: Tensor, active: list[Tensor], top: int, rows: list[Tensor | None]
) -> tuple[Tensor, int]:
    """The tensor work of a step: the walk, the counts, the heads; (B, V) logits and the highest
    level the walk ran (a router may stop it lower than ``top``). What a compiled step compiles."""
    plan = Step(state, active, top, rows)
    h = model.walk(model.embed_tokens(token[:, None], before=state.recent), plan)  # (B, 1, D_0)
    if model.ngram is not None:
        state.recent = model.ngram.push(state.recent, token, active[0])
    for i in range(plan.top + 1):  # no row got a position above the walk's top
        state.count[i] = state.count[i] + plan.active[i].long()
    return _heads(model, state, h[:, 0]), plan.top


@_inference
def splice(state: DecodeState, row: int, fresh: DecodeState, source: int = 0) -> None:
    """Put row ``source`` of ``fresh`` (prompts prefilled apart, with caches of the same capacity)
    in place of ``row`` of ``state``: its caches, counts, pooler, router and n-gram states. How a
    finished row takes a waiting prompt (continuous batching); written in place, so the addresses
    a compiled step captured stay valid."""
    for key, cache in state.caches.items():
        theirs = fresh.caches[key]
        for layer in range(len(cache.k)):
            cache.k[layer][row] = theirs.k[layer][source]
            cache.v[layer][row] = theirs.v[layer][source]
        cache.pos[row] = theirs.pos[source]
        cache.length[row] = theirs.length[source]
        cache.filled = max(cache.filled, theirs.filled)
    state.known = None
    for i in range(len(state.count)):
        state.count[i][row] = fresh.count[i][source]
        for values, given in ((state.boundary, fresh.boundary), (state.last_out, fresh.last_out)):
            if values[i] is not None:
                values[i][row] = given[i][source]
    for mine, theirs in zip(state.pool_states, fresh.pool_states):
        _put_row(mine, theirs, row, source)
    for level, mine in state.router_states.items():
        _put_row(mine, fresh.router_states[level], row, source)
    for i, kept in state.prepared.items():
        kept[row] = fresh.prepared[i][source]
    _put_row(state.recent, fresh.recent, row, source)
    _put_row(state.level_logits, fresh.level_logits, row, source)


def _put_row(mine: Any, theirs: Any, row: int, source: int) -> None:
    """``mine[row] = theirs[source]`` for every tensor in a state (a tensor, a tuple of them, None)."""
    if isinstance(mine, Tensor):
        mine[row] = theirs[source]
    elif isinstance(mine, (tuple, list)):
        for a, b in zip(mine, theirs):
            _put_row(a, b, row, source)


def _own_outputs(state: DecodeState) -> None:
    """Replace the state's tensors that a step produced by copies of them (CUDA graph outputs)."""
    for values in (state.count, state.boundary, state.last_out):
        for i, value in enumerate(values):
            if value is not None:
                values[i] = value.clone()
    state.pool_states = [_cloned(p) for p in state.pool_states]
    state.router_states = {level: _cloned(p) for level, p in state.router_states.items()}
    state.recent = _cloned(state.recent)
    state.prepared = {i: kept.clone() for i, kept in state.prepared.items()}
    state.level_logits = _cloned(state.level_logits)


def _cloned(value: Any) -> Any:
    """``value`` with every tensor in it (a tensor, a tuple or list of them, None) copied."""
    if isinstance(value, Tensor):
        return value.clone()
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a NamedTuple state
        return type(value)(*(_cloned(v) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(_cloned(v) for v in value)
    return value


def _rows(active: list[bool], device: Any) -> Tensor | None:
    """The indices of the ``active`` rows, or None when every row (or none) is."""
    if all(active) or not any(active):
        return None
    return torch.tensor([r for r, a in enumerate(active) if a], device=device)


def _row_bucket(active: list[bool], device: Any) -> Tensor | None:
    """For a compiled step: the ``active`` rows and as many others as fill a power of two (the
    first inactive ones, which compute a position they do not keep, as static steps do for all),
    in order; None when that is every row (or no row is active). A level's stages then run on a
    few fixed shapes of rows (a graph each), not on every row whenever one reaches the level."""
    reached = [r for r, a in enumerate(active) if a]
    size = 1 << max(len(reached) - 1, 0).bit_length()
    if not reached or size >= len(active):
        return None
    idle = [r for r, a in enumerate(active) if not a][: size - len(reached)]
    return torch.tensor(sorted(reached + idle), device=device)


def _heads(model: AUNet, state: DecodeState, h: Tensor) -> Tensor:
    """(B, V) next-token logits of (B, D_0) outputs; the level head's go into ``state``."""
    features = model.norm(h)
    if model.level_head is not None:
        state.level_logits = model.level_head(features)  # (B, L + 1)
    return model.head(features)
