"""Incremental decoding with per-stage KV caches (docs/method.md section 5).

Every stage keeps its own cache. A prompt is prefilled in one walk over the U-Net. Then each new
byte runs the byte-level encoder and decoder; stage i (encoder, or the trunk at the top, and
decoder) runs only when the byte's level is at least i, which the streaming splitter decides in
O(1) the moment the byte exists. A decoder whose level did not get a new coarse position reuses
the last coarse output, at the next offset: exactly what the teacher-forced forward computes, so
the logits agree to float rounding (the tests hold them to 1e-5). The final RMSNorm is applied on
both paths.

Both the prefill and a step are walks of ``AUNet.walk`` with their own plan (``Prefill`` and
``Step`` here), so the contracting and expanding paths are written once, in the assembler.

Rows of a batch may have prompts of different lengths (right-padded; each row keeps its own
lengths per level) and may stop at different times (EOS or a stop sequence). The generation
loop that picks bytes and feeds the streaming splitters is ``aunet.jobs.generate``.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import torch
from torch import Tensor

from aunet.core.model import AUNet, LevelIndex, Part, TeacherForced, WalkPlan
from aunet.core.modules import KVCache, Layout


@attrs.define(eq=False)
class DecodeState:
    """Caches and per-level bookkeeping of a batch being decoded (B rows, levels 0..L)."""

    caches: dict[tuple[int, Part], KVCache]  # every stack: encoders and decoders 0..L-1, the trunk
    count: list[Tensor]  # (B,) positions so far at each level 0..L
    boundary: list[Tensor | None]  # level i >= 1: (B,) level-(i-1) index of the last level-i position
    last_out: list[Tensor | None]  # level i >= 1: (B, D_i) top-stack output at the last level-i position
    stage_calls: list[int]  # steps that ran each level's stages (the trunk at L), after the prefill


def new_state(model: AUNet, batch: int, capacity: int) -> DecodeState:
    """Empty caches for ``batch`` rows of up to ``capacity`` positions per level."""
    param = next(model.parameters())
    args = {"batch": batch, "capacity": capacity, "device": param.device, "dtype": param.dtype}
    depth = model.depth
    caches = {(depth, Part.TRUNK): model.trunk.new_cache(**args)}
    for i in range(depth):
        caches[(i, Part.ENCODER)] = model.encoders[i].new_cache(**args)
        caches[(i, Part.DECODER)] = model.decoders[i].new_cache(**args)
    return DecodeState(
        caches=caches,
        count=[torch.zeros(batch, dtype=torch.long, device=param.device) for _ in range(depth + 1)],
        boundary=[None] * (depth + 1),
        last_out=[None] * (depth + 1),
        stage_calls=[0] * (depth + 1),
    )


@torch.no_grad()
def prefill(model: AUNet, state: DecodeState, tokens: Tensor, levels: Tensor, lengths: Tensor) -> Tensor:
    """Run right-padded prompts (B, P) through every stage, filling the caches; (B, V) logits of
    each row's last real position."""
    b, p = tokens.shape
    depth = model.depth
    rows = torch.arange(b, device=tokens.device)
    valid = torch.arange(p, device=tokens.device)[None] < lengths[:, None]  # (B, P)
    plan = TeacherForced(model.top_levels(tokens, levels), [None] * depth, doc=None, valid=valid,
                         caches=state.caches)  # fmt: skip
    h = model.walk(model.embed(tokens), plan)  # (B, P, D_0)
    logits = model.head(model.norm(h[rows, lengths - 1]))  # (B, V)
    for i in range(depth + 1):
        state.count[i] = plan.layouts[i].valid.sum(1)
    for i in range(1, depth + 1):
        last = state.count[i] - 1
        state.last_out[i] = plan.outputs[i][rows, last]  # (B, D_i)
        state.boundary[i] = plan.maps[i - 1].index[rows, last]
    return logits


class Step(WalkPlan):
    """The plan of one decoding step: one new level-0 position per row, which is a new position
    of every level up to its own; levels above reuse their last output."""

    def __init__(self, state: DecodeState, active: list[Tensor], top: int) -> None:
        self.state = state
        self.active = active  # per level, (B,) bool: rows that get a new position there
        self.top = top
        b = active[0].shape[0]
        self.first = torch.zeros(b, 1, dtype=torch.long, device=active[0].device)  # (B, 1)

    def layout(self, level: int) -> Layout:
        return Layout(valid=self.active[level][:, None])

    def cache(self, level: int, part: Part) -> KVCache | None:
        return self.state.caches[(level, part)]

    def contract(self, level: int) -> LevelIndex:
        # The new level-`level` position is the new level-(level+1) position (a boundary).
        s = self.state
        s.boundary[level + 1] = torch.where(self.active[level + 1], s.count[level], s.boundary[level + 1])
        return self._index(level)

    def expand(self, level: int) -> LevelIndex:
        return self._index(level)

    def _index(self, level: int) -> LevelIndex:
        s = self.state
        offset = (s.count[level] - s.boundary[level + 1])[:, None]  # (B, 1) from the segment's boundary
        none = torch.zeros((), dtype=torch.long, device=offset.device)
        return LevelIndex(self.first, self.active[level + 1][:, None], self.first, offset, none, none)

    def coarse(self, level: int, fresh: Tensor | None) -> Tensor:
        s = self.state
        if fresh is not None:
            s.last_out[level] = torch.where(self.active[level][:, None], fresh[:, 0], s.last_out[level])
        return s.last_out[level][:, None]  # (B, 1, D_level)


@torch.no_grad()
def step(model: AUNet, state: DecodeState, token: Tensor, level: Sequence[int], alive: Sequence[bool]) -> Tensor:
    """Append one token per row (B,) with its level; (B, V) logits of the next token. Rows not
    ``alive`` (finished) are carried along without changing their caches."""
    depth = model.depth
    device = token.device
    active_host = [[bool(a) and (i == 0 or lv >= i) for a, lv in zip(alive, level)] for i in range(depth + 1)]
    active = [torch.tensor(a, device=device) for a in active_host]  # (B,) per level
    top = max(i for i in range(depth + 1) if any(active_host[i]) or i == 0)
    h = model.walk(model.embed(token[:, None]), Step(state, active, top))  # (B, 1, D_0)
    for i in range(top + 1):
        state.stage_calls[i] += 1
    for i in range(depth + 1):
        state.count[i] = state.count[i] + active[i].long()
    return model.head(model.norm(h[:, 0]))  # (B, V)
