"""Pooler modules for the built-in ``select``, ``mean`` and ``attention`` kinds (specs and the
rules they implement: ``aunet.plugins.poolers``). Each has the full form (a whole level at once,
by scatter and gather: no loop, no host sync) and the decoding form (one position at a time, a
running state), which the conformance kit holds equal.

Dimension alphabet: B batch, T positions of the finer level, S segments, D width.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from aunet.core.init import Init, init_matrix
from aunet.core.modules import LevelIndex, Pooler, gather_rows, where_rows


class _Projected(Pooler):
    """RMSNorm then Linear(dim_in -> dim_out), or nothing at all (``non_param``); the names
    ``norm`` and ``proj`` are the checkpoints' (and the reference's weight mapping's)."""

    def __init__(
        self,
        *,
        dim_in: int,
        dim_out: int,
        norm_eps: float,
        init_std: float,
        init: Init | None = None,
        non_param: bool = False,
    ) -> None:
        super().__init__()
        self.dim_in = dim_in
        self.norm = None if non_param else nn.RMSNorm(dim_in, eps=norm_eps)
        self.proj = None if non_param else nn.Linear(dim_in, dim_out, bias=False)
        if self.proj is not None:
            init_matrix(self.proj.weight, init, std=init_std, fan_in=dim_in)

    def project(self, x: Tensor) -> Tensor:
        return x if self.proj is None else self.proj(self.norm(x))


class SelectPooler(_Projected):
    """RMSNorm and Linear of the fine vector at each boundary (or the vector itself: ``non_param``)."""

    def forward(self, x: Tensor, level: LevelIndex) -> Tensor:
        return self.project(gather_rows(x, level.index))  # (B, S, D_out)


def _segment_sum(values: Tensor, members: Tensor, segments: int) -> Tensor:
    """(B, T, D) summed into (B, S, D) by ``members`` (B, T); positions of no segment (S) vanish."""
    b, _, d = values.shape
    out = values.new_zeros(b, segments + 1, d)
    return out.scatter_add(1, members[..., None].expand(-1, -1, d), values)[:, :segments]


class MeanPooler(_Projected):
    """RMSNorm and Linear of the mean of each segment's positions (the boundary included)."""

    def forward(self, x: Tensor, level: LevelIndex) -> Tensor:
        s = level.index.shape[1]
        sums = _segment_sum(x, level.members, s)  # (B, S, D_in)
        counts = _segment_sum(torch.ones_like(x[..., :1]), level.members, s)  # (B, S, 1)
        return self.project(sums / counts.clamp(min=1))

    def initial_state(self, *, batch: int, device: Any, dtype: torch.dtype) -> Any:
        dim = self.dim_in
        return torch.zeros(batch, dim, device=device, dtype=dtype), torch.zeros(batch, 1, device=device, dtype=dtype)

    def step(self, x: Tensor, state: Any, *, active: Tensor, boundary: Tensor) -> tuple[Tensor, Any]:
        total, count = state
        total = where_rows(active, total + x[:, 0], total)  # (B, D_in)
        count = where_rows(active, count + 1, count)
        out = self.project(total / count.clamp(min=1))[:, None]  # (B, 1, D_out)
        closed = active & boundary
        return out, (
            where_rows(closed, torch.zeros_like(total), total),
            where_rows(closed, torch.zeros_like(count), count),
        )


class AttentionPooler(Pooler):
    """A learned query attends over each segment's positions (softmax within the segment), then
    Linear: the word encoders of hierarchical models. Scores are q . RMSNorm(x) / sqrt(D_in); the
    values are RMSNorm(x)."""

    def __init__(
        self, *, dim_in: int, dim_out: int, norm_eps: float, init_std: float, init: Init | None = None
    ) -> None:
        super().__init__()
        self.norm = nn.RMSNorm(dim_in, eps=norm_eps)
        self.query = nn.Parameter(torch.empty(dim_in))
        self.proj = nn.Linear(dim_in, dim_out, bias=False)
        init_matrix(self.query, init, std=init_std, fan_in=dim_in)
        init_matrix(self.proj.weight, init, std=init_std, fan_in=dim_in)

    def _scored(self, x: Tensor) -> tuple[Tensor, Tensor]:
        u = self.norm(x)  # (B, T, D_in)
        return u, (u @ self.query) / u.shape[-1] ** 0.5  # (B, T)

    def forward(self, x: Tensor, level: LevelIndex) -> Tensor:
        b, _t, _d = x.shape
        s = level.index.shape[1]
        u, score = self._scored(x)
        members = level.members
        best = score.new_full((b, s + 1), float("-inf")).scatter_reduce(1, members, score, "amax")  # (B, S + 1)
        weight = (score - torch.gather(best, 1, members)).exp()  # (B, T): at most 1 in each segment
        total = _segment_sum(weight[..., None], members, s)  # (B, S, 1)
        pooled = _segment_sum(weight[..., None] * u, members, s) / total.clamp(min=1e-30)
        return self.proj(pooled)

    def initial_state(self, *, batch: int, device: Any, dtype: torch.dtype) -> Any:
        dim = self.query.shape[0]
        return (
            torch.full((batch, 1), float("-inf"), device=device, dtype=dtype),
            torch.zeros(batch, 1, device=device, dtype=dtype),
            torch.zeros(batch, dim, device=device, dtype=dtype),
        )

    def step(self, x: Tensor, state: Any, *, active: Tensor, boundary: Tensor) -> tuple[Tensor, Any]:
        best, total, acc = state  # an online softmax: the running max, sum of weights, weighted sum
        u, score = self._scored(x[:, 0])  # (B, D_in), (B,)
        score = score[:, None]
        new_best = torch.maximum(best, score)
        rescale = (best - new_best).exp()  # 0 for an empty segment (best = -inf)
        weight = (score - new_best).exp()
        total_new = total * rescale + weight
        acc_new = acc * rescale + weight * u
        best, total, acc = (
            where_rows(active, new_best, best),
            where_rows(active, total_new, total),
            where_rows(active, acc_new, acc),
        )
        out = self.proj(acc / total.clamp(min=1e-30))[:, None]  # (B, 1, D_out)
        closed = active & boundary
        fresh = self.initial_state(batch=x.shape[0], device=x.device, dtype=best.dtype)
        return out, tuple(where_rows(closed, f, v) for f, v in zip(fresh, (best, total, acc)))
