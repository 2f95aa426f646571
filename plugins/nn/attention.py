"""Attention backend modules for the built-in ``sdpa`` and ``math`` kinds.

Both apply the project's masking rule (``aunet.core.modules.AttentionBackend``): causal, within a
document, within the sliding window. Rows holding one document without a window take SDPA's
``is_causal`` fast path (flash kernels); otherwise the boolean mask is built once per layout and
shared by every layer of the level's encoder and decoder.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from aunet.core.modules import AttentionBackend, Layout


def attention_mask(layout: Layout, n_queries: int, n_keys: int, window: int | None, device: Any) -> Tensor | None:
    """(B or 1, 1, S_q, S_k) bool, True where a query may attend; None when plain causal
    attention is exact (one document per row, no window). Queries are the last ``n_queries`` of
    the ``n_keys`` positions. Cached on the layout."""
    key = f"mask:{n_queries}:{n_keys}:{window}"
    if key in layout.cache:
        return layout.cache[key]
    mask = None
    plain_causal = n_queries == n_keys or n_queries == 1  # SDPA's own causal flag is exact
    if layout.doc is not None or (window is not None and window < n_keys) or not plain_causal:
        q = torch.arange(n_keys - n_queries, n_keys, device=device)[:, None]  # (S_q, 1)
        k = torch.arange(n_keys, device=device)[None, :]  # (1, S_k)
        allowed = k <= q
        if window is not None:
            allowed = allowed & (q - k < window)
        mask = allowed[None, None]  # (1, 1, S_q, S_k)
        if layout.doc is not None:
            doc = layout.doc
            same = doc[:, -n_queries:, None] == doc[:, None, :]  # (B, S_q, S_k)
            mask = mask & same[:, None]
    layout.cache[key] = mask
    return mask


class SdpaBackend(AttentionBackend):
    """torch.nn.functional.scaled_dot_product_attention."""

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, layout: Layout, window: int | None,
                mask: Tensor | None = None) -> Tensor:  # fmt: skip
        if mask is None:
            mask = attention_mask(layout, q.shape[2], k.shape[2], window, q.device)
        if mask is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=q.shape[2] > 1)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class MathBackend(AttentionBackend):
    """softmax(q k^T / sqrt(K) + mask) v, in float32, written out: the oracle."""

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, layout: Layout, window: int | None,
                mask: Tensor | None = None) -> Tensor:  # fmt: skip
        n_q, n_k = q.shape[2], k.shape[2]
        if mask is None:
            mask = attention_mask(layout, n_q, n_k, window, q.device)
        if mask is None:
            qi = torch.arange(n_k - n_q, n_k, device=q.device)[:, None]
            mask = (torch.arange(n_k, device=q.device)[None, :] <= qi)[None, None]
        scores = (q.float() @ k.float().transpose(-1, -2)) / q.shape[-1] ** 0.5  # (B, H, S_q, S_k)
        scores = scores.masked_fill(~mask, float("-inf"))
        return (scores.softmax(-1) @ v.float()).to(q.dtype)
