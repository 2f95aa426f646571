"""The ``transformer`` stage module (spec and the rules it follows: ``aunet.plugins.transformer``)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aunet.core.init import Init, init_matrix
from aunet.core.modules import AttentionBackend, DensePlan, KVCache, Layout, Stage


def rope_angles(pos: Tensor, head_dim: int, theta: float) -> Tensor:
    """Rotations for integer positions (B or 1, S): unit complex numbers (B or 1, 1, S, K/2), or
    under torch.compile their (cos, sin) stacked in a trailing dimension of 2."""
    if torch.compiler.is_compiling():
        angles = pos.float()[..., None] * _inverse_frequencies(head_dim, theta, pos.device)  # (B, S, K/2)
        return torch.stack([angles.cos(), angles.sin()], dim=-1)[:, None]
    inverse, ones = _kept_inverse_frequencies(head_dim, theta, pos.device)
    angles = pos[..., None] * inverse  # (B, S, K/2) float32 (the integer positions promoted)
    return torch.polar(ones, angles)[:, None]


def _inverse_frequencies(head_dim: int, theta: float, device: torch.device) -> Tensor:
    """RoPE's (K/2,) inverse frequencies theta^(-2i/K)."""
    return 1.0 / theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)


_FREQUENCIES: dict[tuple[int, float, str], tuple[Tensor, Tensor]] = {}


def _kept_inverse_frequencies(head_dim: int, theta: float, device: torch.device) -> tuple[Tensor, Tensor]:
    """``_inverse_frequencies`` and (K/2,) ones (the rotations' magnitudes), made once per head
    width, theta and device (eagerly: a decoding step would otherwise spend four small kernels
    per stage on them)."""
    key = (head_dim, theta, str(device))
    if key not in _FREQUENCIES:
        inverse = _inverse_frequencies(head_dim, theta, device)
        _FREQUENCIES[key] = (inverse, torch.ones_like(inverse))
    return _FREQUENCIES[key]


def apply_rope(x: Tensor, rotation: Tensor) -> Tensor:
    """Rotate the pairs (x[..., 2i], x[..., 2i+1]) of (B, H, S, K) by the position's angles.

    Eagerly, one complex multiplication (three times faster on CPU than rotating halves); under
    torch.compile, the same in real arithmetic, which inductor fuses (it cannot generate complex
    code)."""
    wide = x.dtype == torch.float32  # float32 in, float32 out: no conversions to dispatch
    pairs = (x if wide else x.float()).reshape(*x.shape[:-1], -1, 2)  # (B, H, S, K/2, 2)
    if not rotation.is_complex():
        a, b = pairs[..., 0], pairs[..., 1]
        cos, sin = rotation[..., 0], rotation[..., 1]
        return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2).to(x.dtype)
    rotated = torch.view_as_real(torch.view_as_complex(pairs) * rotation).flatten(-2)
    return rotated if wide else rotated.to(x.dtype)


class Block(nn.Module):
    """x + Attn(RMSNorm(x)), then h + SwiGLU(RMSNorm(h)); no biases."""

    def __init__(
        self,
        *,
        dim: int,
        head_dim: int,
        kv_heads: int,
        hidden: int,
        norm_eps: float,
        backend: AttentionBackend,
    ) -> None:
        super().__init__()
        self.heads = dim // head_dim
        self.kv_heads = kv_heads
        self.head_dim = head_dim
        self.attn_norm = nn.RMSNorm(dim, eps=norm_eps)
        self.qkv = nn.Linear(dim, dim + 2 * kv_heads * head_dim, bias=False)  # queries, then keys and values
        self.out = nn.Linear(dim, dim, bias=False)
        self.ffn_norm = nn.RMSNorm(dim, eps=norm_eps)
        self.gate_up = nn.Linear(dim, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)
        self.backend = backend

    #: Besides ``forward``, the methods a stage calls that run the block (a wrapper that acts
    #: around ``forward``, as FSDP2's parameter gathering, must act around these too).
    forward_methods = ("prefill", "decode")

    def forward(self, x: Tensor, rotation: Tensor, plan: Any) -> Tensor:
        """A whole sequence (B, S, D) under the level's attention plan (the backend's)."""
        q, k, v = self._project(x, rotation)
        return self._rest(x, self.backend(q, k, v, plan))

    def prefill(
        self, x: Tensor, rotation: Tensor, plan: DensePlan, cache: KVCache, layer: int, slots: Tensor
    ) -> Tensor:
        """New positions (B, S, D) after those in ``cache``: they attend to the cached keys and to
        each other (``plan`` over C + S keys), then go into the cache's ``layer`` at ``slots``."""
        q, k, v = self._project(x, rotation)
        keys = torch.cat([cache.k[layer][:, :, 1 : cache.used], k], dim=2)  # (B, H, filled + S, K)
        values = torch.cat([cache.v[layer][:, :, 1 : cache.used], v], dim=2)
        att = self.backend(q, keys, values, plan)
        cache.write(layer, k, v, slots)
        return self._rest(x, att)

    def decode(
        self,
        x: Tensor,
        rotation: Tensor,
        plan: DensePlan,
        cache: KVCache,
        layer: int,
        slots: Tensor,
        rows: Tensor | None = None,
        by_row: list[tuple[int, DensePlan]] | None = None,
    ) -> Tensor:
        """One new position per row (B, 1, D) (of the cache's ``rows`` when given): written into
        the cache's ``layer`` at ``slots`` first, then attending to every used slot (``plan``
        over ``cache.used`` keys; with ``by_row``, each of ``rows`` with its own plan, to views of
        its own slots, in ``rows`` order)."""
        q, k, v = self._project(x, rotation)
        cache.write(layer, k, v, slots, rows)
        if by_row is not None:
            att = torch.cat([self.backend(q[j : j + 1], *cache.row(layer, r), p) for j, (r, p) in enumerate(by_row)])
            return self._rest(x, att)
        keys, values = cache.keys(layer, rows)
        return self._rest(x, self.backend(q, keys, values, plan))

    def _project(self, x: Tensor, rotation: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Queries (B, H, S, K), keys and values (B, H_kv, S, K) of the normalized input, rotated."""
        b, s, d = x.shape
        kv = self.kv_heads * self.head_dim
        qk, v = self.qkv(self.attn_norm(x)).split([d + kv, kv], dim=-1)  # (B, S, D + H_kv K), (B, S, H_kv K)
        heads = self.heads + self.kv_heads
        # Queries and keys rotated together: one rotation of (B, H + H_kv, S, K), then split.
        qk = apply_rope(qk.view(b, s, heads, self.head_dim).transpose(1, 2), rotation)
        q, k = qk.split([self.heads, self.kv_heads], dim=1)  # (B, H, S, K), (B, H_kv, S, K)
        v = v.view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        return q, k, v

    def _rest(self, x: Tensor, att: Tensor) -> Tensor:
        """The attention output (B, H, S, K) projected and added to ``x``, then the feed-forward half."""
        b, s, d = x.shape
        h = x + self.out(att.transpose(1, 2).reshape(b, s, d))
        gate, up = self.gate_up(self.ffn_norm(h)).chunk(2, dim=-1)  # 2 x (B, S, hidden)
        return h + self.down(F.silu(gate) * up)


class TransformerStage(Stage):
    """A stack of ``layers`` blocks over one level's sequence; RoPE over the stage's own index."""

    def __init__(
        self,
        *,
        dim: int,
        layers: int,
        head_dim: int,
        hidden: int,
        window: int | None,
        rope_theta: float,
        norm_eps: float,
        init_std: float,
        backend: AttentionBackend,
        kv_heads: int | None = None,
        init: Init | None = None,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.head_dim = head_dim
        self.kv_heads = kv_heads or dim // head_dim
        self.hidden = hidden
        self.init = init
        self.window = window
        self.rope_theta = rope_theta
        self.init_std = init_std
        self.backend = backend
        self.blocks = nn.ModuleList(
            Block(
                dim=dim,
                head_dim=head_dim,
                kv_heads=self.kv_heads,
                hidden=hidden,
                norm_eps=norm_eps,
                backend=backend,
            )
            for _ in range(layers)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``scaled``: std ``init_std``, output projections over sqrt(2 x layers); ``reference``:
        std fan_in ** -0.5 truncated at 3 sigmas (``aunet.core.init``)."""
        std, init, layers = self.init_std, self.init, len(self.blocks)
        for block in self.blocks:
            init_matrix(block.qkv.weight, init, std=std, fan_in=self.dim)
            init_matrix(block.gate_up.weight, init, std=std, fan_in=self.dim)
            init_matrix(block.out.weight, init, std=std, fan_in=self.dim, depth_scale=layers)
            init_matrix(block.down.weight, init, std=std, fan_in=self.hidden, depth_scale=layers)

    def forward(self, x: Tensor, *, layout: Layout, cache: KVCache | None = None) -> Tensor:
        if cache is not None:
            return self._forward_cached(x, layout, cache)
        b, s, _ = x.shape
        pos = layout.pos if layout.pos is not None else torch.arange(s, device=x.device)[None]
        rotation = rope_angles(pos, self.head_dim, self.rope_theta)  # (B|1, 1, S, K/2)
        plan = self.backend.planned(layout, batch=b, length=s, window=self.window, device=x.device)
        for block in self.blocks:
            x = block(x, rotation, plan)
        return x

    def _forward_cached(self, x: Tensor, layout: Layout, cache: KVCache) -> Tensor:
        b, s, _ = x.shape
        valid = layout.valid if layout.valid is not None else torch.ones(b, s, dtype=torch.bool, device=x.device)
        if s == 1:
            return self._decode(x, layout, valid, cache)
        positions, slots = cache.slots(valid)  # (B, S) each
        rotation = rope_angles(positions, self.head_dim, self.rope_theta)
        # Which keys each new position may see: cached slots, then the new positions themselves.
        q_pos = positions[:, :, None]  # (B, S, 1)
        old = cache.pos[:, None, 1 : cache.used]  # (B, 1, filled)
        see_old = (old >= 0) & (old <= q_pos)
        new = positions[:, None, :]  # (B, 1, S)
        itself = torch.eye(s, dtype=torch.bool, device=x.device)[None]  # (1, S, S)
        # Padding queries see at least themselves, so no row of the softmax is empty (NaN).
        see_new = ((new <= q_pos) & valid[:, None, :]) | itself
        if self.window is not None:
            see_old = see_old & (q_pos - old < self.window)
            see_new = see_new & (q_pos - new < self.window)
        plan = DensePlan(torch.cat([see_old, see_new], dim=2)[:, None])  # (B, 1, S, filled + S)
        for i, block in enumerate(self.blocks):
            x = block.prefill(x, rotation, plan, cache, i, slots)
        cache.commit(positions, slots, valid)
        return x

    def _decode(self, x: Tensor, layout: Layout, valid: Tensor, cache: KVCache) -> Tensor:
        """One new position per row (B, 1, D), of ``layout.rows`` only when given: the new keys
        go into the cache first, then every used slot is a key."""
        full, rows = x, layout.rows
        if rows is not None:
            x = x.index_select(0, rows)  # (B', 1, D)
        # The encoder and the decoder of a level step in lockstep (their caches hold the same
        # positions): the second reuses the first's positions, slots, rotation and mask.
        key = ("decode", cache.capacity, cache.used, self.window, self.head_dim, self.rope_theta)
        if key not in layout.cache:
            layout.cache[key] = self._decode_plan(valid if rows is None else valid.index_select(0, rows), rows, cache)
        positions, slots, rotation, plan, valid = layout.cache[key]
        cache.commit(positions, slots, valid, rows)
        by_row = None
        if rows is not None and cache.reads_by_row():
            # Each row attends to views of its own slots (no copy of the rows' keys), with its row
            # of the mask; made once per step for the level's encoder and decoder.
            memo = (*key, "by_row")
            if memo not in layout.cache:
                layout.cache[memo] = [(r, DensePlan(plan.mask[j : j + 1])) for j, r in enumerate(rows.tolist())]
            by_row = layout.cache[memo]
        for i, block in enumerate(self.blocks):
            x = block.decode(x, rotation, plan, cache, i, slots, rows, by_row)
        return x if rows is None else full.index_copy(0, rows, x)

    def _decode_plan(self, valid: Tensor, rows: Tensor | None, cache: KVCache) -> tuple[Any, ...]:
        """Positions, slots (B', 1), the rotation and the mask over the slots used once this step's
        keys are in, and ``valid``, for one step of ``rows`` (before the cache commits it)."""
        positions, slots = cache.slots(valid, rows)  # (B', 1) each
        rotation = rope_angles(positions, self.head_dim, self.rope_theta)
        used = min(cache.capacity, cache.filled + 1) + 1  # the slots read after this step's commit
        slot_pos = cache.pos[:, None, :used]  # (B, 1, used), this step's slots not yet recorded
        if rows is not None:
            slot_pos = slot_pos.index_select(0, rows)
        index = torch.arange(used, device=valid.device)[None, None, :]  # (1, 1, used)
        own = index == slots[:, :, None]  # the slot this step writes (the spare where not valid)
        # A key is seen if it is an earlier position in the window, or the slot this step writes
        # (its new key; for a row with nothing to add the spare's, so no softmax row is empty).
        # Every position a cache holds is earlier than the row's next, and a ring of at most the
        # window's slots holds only positions in the window but the one this step overwrites
        # (which ``own`` replaces): a used slot is seen. A ring wider than the window is masked.
        mask = slot_pos >= 0
        if self.window is not None and cache.capacity > self.window:
            mask = mask & (positions[:, :, None] - slot_pos < self.window)
        plan = DensePlan((mask | own)[:, None])  # (B', 1, 1, used)
        return positions, slots, rotation, plan, valid

    def checkpointable(self) -> list[nn.Module]:
        return list(self.blocks)

    def new_cache(self, *, batch: int, capacity: int, device: object, dtype: torch.dtype) -> KVCache:
        if self.window is not None:
            capacity = min(capacity, self.window)
        return KVCache(
            layers=len(self.blocks),
            batch=batch,
            heads=self.kv_heads,
            head_dim=self.head_dim,
            capacity=capacity,
            device=device,
            dtype=dtype,
        )
