"""Attention backend modules for the built-in ``sdpa``, ``math``, ``flex`` and ``flash`` kinds
(the rule, the plans and when each applies: ``aunet.plugins.attention``).

Each backend plans a level once per forward (``plan``) and attends with the plan; all accept a
``DensePlan`` (an explicit mask, what incremental decoding builds). No plan reads data back to the
host: document boundaries become masks, block masks or sorted offsets on the device.

Dimension alphabet: B batch, H heads, S positions, K head dim, W window, N blocks of W positions.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from aunet.core.errors import AunetError
from aunet.core.modules import AttentionBackend, DensePlan, Layout, allowed


def _positions(length: int, device: Any) -> Tensor:
    return torch.arange(length, device=device)


def dense_mask(layout: Layout, length: int, window: int | None, device: Any) -> Tensor:
    """(B or 1, 1, S, S) bool: the rule over a whole level (``aunet.core.modules.allowed``)."""
    pos = _positions(length, device)
    if layout.doc is None:
        return allowed(pos, pos, window)[None, None]
    return allowed(pos, pos, window, layout.doc, layout.doc)[:, None]


def _expand_kv(q: Tensor, x: Tensor) -> Tensor:
    """Grouped-query attention for kernels without it: repeat each key/value head for its group."""
    return x if x.shape[1] == q.shape[1] else x.repeat_interleave(q.shape[1] // x.shape[1], dim=1)


def dense_sdpa(q: Tensor, k: Tensor, v: Tensor, plan: DensePlan) -> Tensor:
    """Attention under an explicit mask by plain SDPA (key and value heads repeated for grouped
    queries): how the kernels that take no mask (flex, flash) attend against a decoding cache."""
    return F.scaled_dot_product_attention(q, _expand_kv(q, k), _expand_kv(q, v), attn_mask=plan.mask)


class MathBackend(AttentionBackend):
    """softmax(q k^T / sqrt(K) + mask) v, in float32, written out: the oracle."""

    def plan(self, layout: Layout, *, batch: int, length: int, window: int | None, device: Any) -> DensePlan:
        return DensePlan(dense_mask(layout, length, window, device))

    def forward(self, q: Tensor, k: Tensor, v: Tensor, plan: Any) -> Tensor:
        k, v = _expand_kv(q, k), _expand_kv(q, v)
        scores = (q.float() @ k.float().transpose(-1, -2)) / q.shape[-1] ** 0.5  # (B, H, S_q, S_k)
        scores = scores.masked_fill(~plan.mask, float("-inf"))
        return (scores.softmax(-1) @ v.float()).to(q.dtype)


class CausalPlan:
    """One document per row and no effective window: SDPA's own ``is_causal`` is exact."""


class BandPlan:
    """A sliding window shorter than the sequence: queries in blocks of W attend to their block
    and the one before, under one (B or 1, N, 1, W, 2W) mask. Memory O(T x W), never (T, T)."""

    def __init__(self, window: int, length: int, mask: Tensor) -> None:
        self.window = window
        self.length = length
        self.mask = mask  # (B or 1, N, 1, W, 2W)


def band_plan(layout: Layout, *, length: int, window: int, device: Any) -> BandPlan:
    w = window
    n = math.ceil(length / w)
    r = torch.arange(w, device=device)[:, None]  # query offset within its block
    j = torch.arange(2 * w, device=device)[None, :]  # key offset within [previous block, block]
    band = (j <= w + r) & (j > r)  # (W, 2W): k <= q and q - k < W
    first = torch.arange(n, device=device)[:, None] * w - w + torch.arange(2 * w, device=device)[None, :]  # (N, 2W)
    present = (first >= 0)[:, None, :]  # (N, 1, 2W): the block before the first is padding
    mask = (band[None] & present)[None, :, None]  # (1, N, 1, W, 2W)
    if layout.doc is not None:
        pad = n * w - length
        doc = F.pad(layout.doc, (w, pad), value=-1)  # (B, W + N*W): -1 before and after the row
        q_doc = doc[:, w:].reshape(-1, n, w)  # (B, N, W)
        k_doc = torch.cat([doc[:, :-w].reshape(-1, n, w), doc[:, w:].reshape(-1, n, w)], dim=2)  # (B, N, 2W)
        mask = mask & (q_doc[..., :, None] == k_doc[..., None, :])[:, :, None]  # (B, N, 1, W, 2W)
    return BandPlan(w, length, mask)


def banded(q: Tensor, k: Tensor, v: Tensor, plan: BandPlan, sdpa: Callable[..., Tensor]) -> Tensor:
    """Attention under a ``BandPlan`` with ``sdpa(q, k, v, attn_mask=...)`` on (B*N, H, W, *)."""
    b, h, s, d = q.shape
    w = plan.window
    n = math.ceil(s / w)
    pad = n * w - s

    def blocks(x: Tensor) -> Tensor:  # (B, H', S, K) -> (B, N, H', W, K)
        return F.pad(x, (0, 0, 0, pad)).view(b, x.shape[1], n, w, d).transpose(1, 2)

    def windows(x: Tensor) -> Tensor:  # (B, H', S, K) -> (B*N, H', 2W, K): each block and the one before
        padded = F.pad(x, (0, 0, w, pad))  # (B, H', W + N*W, K)
        before = padded[:, :, :-w].reshape(b, x.shape[1], n, w, d)
        this = padded[:, :, w:].reshape(b, x.shape[1], n, w, d)
        return torch.cat([before, this], dim=3).transpose(1, 2).reshape(b * n, x.shape[1], 2 * w, d)

    qb = blocks(q).reshape(b * n, h, w, d)  # (B*N, H, W, K)
    mask = plan.mask.expand(b, n, 1, w, 2 * w).reshape(b * n, 1, w, 2 * w)
    out = sdpa(qb, windows(k), windows(v), attn_mask=mask)  # (B*N, H, W, K)
    return out.view(b, n, h, w, d).transpose(1, 2).reshape(b, h, n * w, d)[:, :, :s]


_SDPA_KERNELS = {
    "flash": "FLASH_ATTENTION",
    "efficient": "EFFICIENT_ATTENTION",
    "cudnn": "CUDNN_ATTENTION",
    "math": "MATH",
}


class SdpaBackend(AttentionBackend):
    """torch.nn.functional.scaled_dot_product_attention, with the cheapest exact plan per level."""

    def __init__(self, kernel: str | None = None) -> None:
        super().__init__()
        self.kernel = kernel

    def plan(self, layout: Layout, *, batch: int, length: int, window: int | None, device: Any) -> Any:
        if window is not None and window >= length:
            window = None  # the window covers the whole sequence: plain causal attention
        if window is not None:
            return band_plan(layout, length=length, window=window, device=device)
        if layout.doc is None:
            return CausalPlan()
        return DensePlan(dense_mask(layout, length, None, device))

    def _sdpa(self, q: Tensor, k: Tensor, v: Tensor, **kwargs: Any) -> Tensor:
        gqa = {"enable_gqa": True} if k.shape[1] != q.shape[1] else {}
        if self.kernel is None:
            return F.scaled_dot_product_attention(q, k, v, **kwargs, **gqa)
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel([getattr(SDPBackend, _SDPA_KERNELS[self.kernel])]):
            return F.scaled_dot_product_attention(q, k, v, **kwargs, **gqa)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, plan: Any) -> Tensor:
        if isinstance(plan, CausalPlan):
            return self._sdpa(q, k, v, is_causal=q.shape[2] > 1)
        if isinstance(plan, BandPlan):
            return banded(q, _expand_kv(q, k), _expand_kv(q, v), plan, self._sdpa)
        return self._sdpa(q, k, v, attn_mask=plan.mask)


class FlexBackend(AttentionBackend):
    """torch.nn.attention.flex_attention with one BlockMask per level; the kernel is compiled once
    per process (a class attribute), as torchtitan does."""

    _compiled: Callable[..., Tensor] | None = None

    def __init__(self, compile: bool) -> None:
        super().__init__()
        self.compile = compile

    @classmethod
    def kernel(cls, compile: bool) -> Callable[..., Tensor]:
        from torch.nn.attention.flex_attention import flex_attention

        if not compile:
            return flex_attention
        if cls._compiled is None:
            cls._compiled = torch.compile(flex_attention, dynamic=False)
        return cls._compiled

    def plan(self, layout: Layout, *, batch: int, length: int, window: int | None, device: Any) -> Any:
        """A BlockMask of causal & sliding window & same document. One mask function serves every
        level, the window and the documents being tensors it reads: a compiled kernel is then
        compiled once per shape, not once per kind of masking."""
        from torch.nn.attention.flex_attention import create_block_mask

        doc = layout.doc if layout.doc is not None else torch.zeros(batch, length, dtype=torch.long, device=device)
        reach = torch.tensor(window if window is not None else length + 1, device=device)

        def causal_window_document(b: Tensor, h: Tensor, q: Tensor, k: Tensor) -> Tensor:
            return (k <= q) & (q - k < reach) & (doc[b, q] == doc[b, k])

        return create_block_mask(causal_window_document, batch, None, length, length, device=device)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, plan: Any) -> Tensor:
        if isinstance(plan, DensePlan):  # decoding against the cache: a mask of a few rows
            return dense_sdpa(q, k, v, plan)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
            return self.kernel(self.compile)(q, k, v, block_mask=plan, enable_gqa=k.shape[1] != q.shape[1])


class FlashKernel(NamedTuple):
    """What ``flash_kernel`` found: a varlen kernel and its name, or why there is none."""

    kernel: Callable[..., Tensor] | None
    name: str | None = None  # "flash-attn" or "torch varlen_attn" when found
    unavailable: str | None = None  # why not, when ``kernel`` is None


def flash_kernel(implementation: str) -> FlashKernel:
    """The varlen kernel for ``auto``, ``flash-attn`` or ``torch``, or why there is none."""
    if implementation in ("auto", "flash-attn"):
        try:
            from flash_attn import flash_attn_varlen_func

            return FlashKernel(flash_attn_varlen_func, name="flash-attn")
        except ImportError:
            if implementation == "flash-attn":
                return FlashKernel(None, unavailable="flash-attn is not installed")
    try:
        from torch.nn.attention.varlen import varlen_attn

        return FlashKernel(varlen_attn, name="torch varlen_attn")
    except ImportError:
        return FlashKernel(None, unavailable="this torch has no torch.nn.attention.varlen")


class VarlenPlan:
    """The rows' documents as one packed batch of sequences: (B*S + 1,) int32 cumulative starts.
    Documents are found without a host sync: every row start and document start, sorted, then the
    total repeated (empty sequences) up to a static length of B*S + 1."""

    def __init__(self, offsets: Tensor, length: int, window: int | None) -> None:
        self.offsets = offsets
        self.length = length  # an upper bound of any sequence's length (a row's)
        self.window = window


class FlashBackend(AttentionBackend):
    """Variable-length flash attention over packed documents, with the sliding window."""

    def __init__(self, kernel: Callable[..., Tensor], name: str) -> None:
        super().__init__()
        self.varlen = kernel
        self.name = name

    def plan(self, layout: Layout, *, batch: int, length: int, window: int | None, device: Any) -> VarlenPlan:
        total = batch * length
        starts = torch.zeros(batch, length, dtype=torch.bool, device=device)
        starts[:, 0] = True
        if layout.doc is not None:
            starts[:, 1:] = layout.doc[:, 1:] != layout.doc[:, :-1]
        flat = torch.arange(total, device=device).view(batch, length)
        begins = torch.where(starts, flat, total).flatten().sort().values  # (B*S,): starts, then `total`
        offsets = torch.cat([begins, torch.full((1,), total, device=device)]).to(torch.int32)
        return VarlenPlan(offsets, length, window if window is not None and window < length else None)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, plan: Any) -> Tensor:
        if isinstance(plan, DensePlan):  # decoding against the cache
            return dense_sdpa(q, k, v, plan)
        if q.dtype not in (torch.bfloat16, torch.float16):
            raise AunetError(
                f"attention kind 'flash' computes in bfloat16 or float16, and got {q.dtype}: train or "
                'evaluate under bfloat16 autocast (precision = "bfloat16", or "auto" on CUDA), '
                "or use sdpa"
            )
        b, h, s, d = q.shape

        def packed(x: Tensor) -> Tensor:  # (B, H', S, K) -> (B*S, H', K)
            return x.transpose(1, 2).reshape(b * s, x.shape[1], d)

        left = plan.window - 1 if plan.window is not None else -1
        if self.name == "flash-attn":
            out = self.varlen(
                packed(q),
                packed(k),
                packed(v),
                plan.offsets,
                plan.offsets,
                plan.length,
                plan.length,
                causal=True,
                window_size=(left, 0),
            )
        else:
            out = self.varlen(
                packed(q),
                packed(k),
                packed(v),
                plan.offsets,
                plan.offsets,
                plan.length,
                plan.length,
                window_size=(left, 0),
                enable_gqa=k.shape[1] != q.shape[1],
            )
        return out.view(b, s, h, d).transpose(1, 2)  # (B, H, S, K)
