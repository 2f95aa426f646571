"""Incremental decoding with per-stage KV caches (AUNET.md section 5).

Every stage keeps its own cache. A prompt is prefilled in one pass per stage. Then each new byte
runs the byte-level encoder and decoder; stage i (encoder, or the trunk at the top, and decoder)
runs only when the byte's level is at least i, which the streaming splitter decides in O(1) the
moment the byte exists. A decoder whose level did not get a new coarse position reuses the last
coarse output, at the next offset: exactly what the teacher-forced forward computes, so the logits
agree to float rounding (the tests hold them to 1e-5). The final RMSNorm is applied on both paths.

Rows of a batch may have prompts of different lengths (right-padded; each row keeps its own
lengths per level) and may stop at different times (EOS or a stop sequence).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import attrs
import torch
from torch import Tensor

from aunet.core.levels import LevelStream
from aunet.core.model import AUNet, boundary_index
from aunet.core.modules import KVCache, Layout
from aunet.core.tokens import BOS, EOS, PAD


#: Decoding steps of at most this many rows run on one CPU thread.
STEP_ROWS_PER_THREAD = 8


@attrs.define(eq=False)
class DecodeState:
    """Caches and per-level bookkeeping of a batch being decoded (B rows, levels 0..L)."""

    encoders: list[KVCache]  # levels 0..L-1
    decoders: list[KVCache]  # levels 0..L-1
    trunk: KVCache
    count: list[Tensor]  # (B,) positions so far at each level 0..L
    boundary: list[Tensor | None]  # level i >= 1: (B,) level-(i-1) index of the last level-i position
    last_out: list[Tensor | None]  # level i >= 1: (B, D_i) stage output at the last level-i position
    stage_calls: list[int]  # steps that ran each level's stages (the trunk at L), after the prefill


def new_state(model: AUNet, batch: int, capacity: int) -> DecodeState:
    param = next(model.parameters())
    args = {"batch": batch, "capacity": capacity, "device": param.device, "dtype": param.dtype}
    depth = model.depth
    return DecodeState(
        encoders=[model.encoders[i].new_cache(**args) for i in range(depth)],
        decoders=[model.decoders[i].new_cache(**args) for i in range(depth)],
        trunk=model.trunk.new_cache(**args),
        count=[torch.zeros(batch, dtype=torch.long, device=param.device) for _ in range(depth + 1)],
        boundary=[None] * (depth + 1),
        last_out=[None] * (depth + 1),
        stage_calls=[0] * (depth + 1),
    )


def _stage(model: AUNet, state: DecodeState, level: int, decoder: bool) -> tuple:
    if level == model.depth:
        return model.trunk, state.trunk
    if decoder:
        return model.decoders[level], state.decoders[level]
    return model.encoders[level], state.encoders[level]


@torch.no_grad()
def prefill(model: AUNet, state: DecodeState, tokens: Tensor, levels: Tensor, lengths: Tensor) -> Tensor:
    """Run right-padded prompts (B, P) through every stage, filling the caches; (B, V) logits of
    each row's last real position."""
    b, p = tokens.shape
    depth = model.depth
    rows = torch.arange(b, device=tokens.device)
    valid = [torch.arange(p, device=tokens.device)[None] < lengths[:, None]]  # (B, P)
    lv = torch.where((tokens == BOS) | (torch.arange(p, device=tokens.device) == 0), depth, levels.long())
    h = model.embed(tokens)
    skips, maps = [], []
    for i in range(depth):
        stage, cache = _stage(model, state, i, decoder=False)
        h = stage(h, layout=Layout(valid=valid[i]), cache=cache)  # (B, S_i, D_i)
        skips.append(h)
        m = boundary_index((lv > i) & valid[i], None)
        maps.append(m)
        h = model.poolers[i](h, m.index)
        lv = torch.gather(lv, 1, m.index).masked_fill(~m.valid, 0)
        valid.append(m.valid)
    h = model.trunk(h, layout=Layout(valid=valid[depth]), cache=state.trunk)
    outs = {depth: h}
    for i in reversed(range(depth)):
        m = maps[i]
        h = skips[i] + model.upsamplers[i](h, m.segment, m.offset)
        h = model.decoders[i](h, layout=Layout(valid=valid[i]), cache=state.decoders[i])
        outs[i] = h
    logits = model.head(model.norm(h[rows, lengths - 1]))  # (B, V)
    for i in range(depth + 1):
        state.count[i] = valid[i].sum(1)
    for i in range(1, depth + 1):
        last = state.count[i] - 1
        state.last_out[i] = outs[i][rows, last]  # (B, D_i)
        state.boundary[i] = maps[i - 1].index[rows, last]
    return logits


@torch.no_grad()
def step(model: AUNet, state: DecodeState, token: Tensor, level: Sequence[int], alive: Sequence[bool]) -> Tensor:
    """Append one token per row (B,) with its level; (B, V) logits of the next token. Rows not
    ``alive`` (finished) are carried along without changing their caches."""
    depth = model.depth
    device = token.device
    b = token.shape[0]
    active_host = [[bool(a) and (i == 0 or lv >= i) for a, lv in zip(alive, level)] for i in range(depth + 1)]
    active = [torch.tensor(a, device=device) for a in active_host]  # (B,) per level
    top = max(i for i in range(depth + 1) if any(active_host[i]) or i == 0)
    first = torch.zeros(b, 1, dtype=torch.long, device=device)

    h = model.embed(token[:, None])  # (B, 1, D_0)
    skips = []
    for i in range(top + 1):
        if i:
            h = model.poolers[i - 1](h, first)  # the new level-(i-1) position is a level-i boundary
            state.boundary[i] = torch.where(active[i], state.count[i - 1], state.boundary[i])
        stage, cache = _stage(model, state, i, decoder=False)
        h = stage(h, layout=Layout(valid=active[i][:, None]), cache=cache)
        state.stage_calls[i] += 1
        skips.append(h)
    if top == depth and depth:
        state.last_out[depth] = torch.where(active[depth][:, None], h[:, 0], state.last_out[depth])
    for i in reversed(range(min(top, depth - 1) + 1)):
        coarse = state.last_out[i + 1][:, None]  # (B, 1, D_{i+1})
        offset = (state.count[i] - state.boundary[i + 1])[:, None]  # (B, 1)
        up = model.upsamplers[i](coarse, first, offset)
        h = model.decoders[i](skips[i] + up, layout=Layout(valid=active[i][:, None]), cache=state.decoders[i])
        if i:
            state.last_out[i] = torch.where(active[i][:, None], h[:, 0], state.last_out[i])
    for i in range(depth + 1):
        state.count[i] = state.count[i] + active[i].long()
    return model.head(model.norm(h[:, 0]))  # (B, V)


@attrs.frozen
class Decoded:
    """What ``decode`` produced."""

    new_bytes: list[bytes]
    logits: list[list[Tensor]]  # per row, the (V,) logits each new token was chosen from
    trunk_calls: int
    stage_calls: tuple[int, ...]
    truncated: tuple[int, ...]  # prompt bytes dropped from the left, per row


def decode(model: AUNet, prompts: Sequence[bytes], max_new_bytes: int, *,
           choose: Callable[[Tensor], Tensor], stop: Sequence[bytes] = (),
           on_bytes: Callable[[int, bytes], None] | None = None, keep_logits: bool = False) -> Decoded:  # fmt: skip
    """Prefill, then pick and append one byte per row at a time with ``choose`` ((B, V) logits ->
    (B,) ids) until EOS, a stop sequence or ``max_new_bytes``."""
    from aunet.core.model import compute_levels

    if max_new_bytes < 0:
        raise ValueError(f"max_new_bytes must be >= 0, got {max_new_bytes}")
    spec = model.spec
    device = next(model.parameters()).device
    limit = spec.model.context - 1  # prompt bytes after BOS
    truncated = tuple(max(0, len(p) - limit) for p in prompts)
    prompts = [bytes(p[len(p) - limit :]) if len(p) > limit else bytes(p) for p in prompts]
    for i, cut in enumerate(truncated):
        if cut:
            warnings.warn(f"prompt {i} is longer than the model's context ({spec.model.context} positions with "
                          f"BOS); kept its last {limit:,} bytes, dropped {cut:,}", RuntimeWarning, stacklevel=3)  # fmt: skip
    b = len(prompts)
    lengths = torch.tensor([len(p) + 1 for p in prompts], device=device)
    width = int(lengths.max())
    tokens = torch.full((b, width), PAD, dtype=torch.long, device=device)
    levels = torch.zeros((b, width), dtype=torch.uint8, device=device)
    streams: list[LevelStream] = []
    stack = spec.splitter_stack()
    for r, prompt in enumerate(prompts):
        tokens[r, 0] = BOS
        levels[r, 0] = spec.depth
        if prompt:
            tokens[r, 1 : len(prompt) + 1] = torch.frombuffer(bytearray(prompt), dtype=torch.uint8).long()
        stream = stack.stream()
        levels[r, 1 : len(prompt) + 1] = torch.from_numpy(stream.feed(prompt).copy()) if prompt else levels[r, 1:1]
        streams.append(stream)
    state = new_state(model, b, width + max_new_bytes)
    was_training = model.training
    threads = torch.get_num_threads()
    model.eval()
    try:
        logits = prefill(model, state, tokens, levels, lengths)
        if device.type == "cpu" and b <= STEP_ROWS_PER_THREAD:
            # A step multiplies one position per row: waking a second thread costs more than it saves
            # (100 us against 25 us for a 320x960 matrix on this project's CI machine).
            torch.set_num_threads(1)
        produced = [bytearray() for _ in range(b)]
        kept: list[list[Tensor]] = [[] for _ in range(b)]
        alive = [max_new_bytes > 0] * b
        for _ in range(max_new_bytes):
            chosen = choose(logits)  # (B,)
            ids = chosen.tolist()
            level = []
            for r in range(b):
                if not alive[r]:
                    level.append(0)
                    continue
                if keep_logits:
                    kept[r].append(logits[r].detach().clone())
                if ids[r] == EOS:
                    alive[r] = False
                    level.append(0)
                    continue
                produced[r].append(ids[r])
                level.append(streams[r].push(ids[r]))
                if on_bytes is not None:
                    on_bytes(r, bytes((ids[r],)))
                if any(produced[r].endswith(s) for s in stop if s) or len(produced[r]) >= max_new_bytes:
                    alive[r] = False
            if not any(alive):
                break
            logits = step(model, state, chosen.clamp(max=255), level, alive)
    finally:
        torch.set_num_threads(threads)
        model.train(was_training)
    calls = tuple(state.stage_calls)
    return Decoded([bytes(p) for p in produced], kept, calls[-1], calls, truncated)
