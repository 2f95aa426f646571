"""The router module of the built-in ``dynamic`` kind (its spec and rule: ``aunet.plugins.routers``).

Dimension alphabet: B batch, S positions of the level below, D its width.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aunet.core.modules import Layout, Router, Routing


class DynamicState(NamedTuple):
    """What decoding keeps per row: the previous position's normalised key and whether there is
    one."""

    key: Tensor  # (B, D) float32
    started: Tensor  # (B,) bool


class DynamicRouter(Router):
    """p_t = (1 - cos(W_q x_t, W_k x_{t-1})) / 2; p = 1 at a row's first position and at every
    document start; a boundary where p >= 0.5. The projections start as the identity (as H-Net's),
    so that an untrained router cuts where adjacent states differ. Cosines are taken in float32
    whatever the autocast, so the decision at 0.5 does not rest on bfloat16 rounding."""

    def __init__(self, dim: int, *, target: float, loss_weight: float, smoothing: bool) -> None:
        super().__init__()
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        with torch.no_grad():
            self.q.weight.copy_(torch.eye(dim))
            self.k.weight.copy_(torch.eye(dim))
        self.target = target
        self.loss_weight = loss_weight
        self.smooth = smoothing

    def _keys(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return F.normalize(self.q(x).float(), dim=-1), self._key(x)

    def _key(self, x: Tensor) -> Tensor:
        return F.normalize(self.k(x).float(), dim=-1)

    def forward(self, x: Tensor, layout: Layout) -> Routing:
        q, k = self._keys(x)  # (B, S, D) each
        cos = (q[:, 1:] * k[:, :-1]).sum(-1)  # (B, S - 1): each position against the one before
        first = torch.ones(cos.shape[0], 1, dtype=cos.dtype, device=cos.device)  # a row's first position
        prob = torch.cat([first, ((1 - cos) / 2).clamp(0, 1)], dim=1)  # (B, S)
        if layout.doc is not None:  # a document's first position has no position before it either
            prob = torch.where(layout.doc != layout.doc.roll(1, dims=1), 1.0, prob)
        return Routing(prob, prob >= 0.5)

    def initial_state(self, *, batch: int, device: Any, dtype: torch.dtype) -> DynamicState:
        key = torch.zeros(batch, self.k.in_features, device=device)
        return DynamicState(key, torch.zeros(batch, dtype=torch.bool, device=device))

    def step(self, x: Tensor, state: DynamicState, *, active: Tensor) -> tuple[Routing, DynamicState]:
        q, k = self._keys(x[:, 0])  # (B, D) each
        cos = (q * state.key).sum(-1)  # (B,)
        prob = torch.where(state.started, ((1 - cos) / 2).clamp(0, 1), 1.0)  # (B,)
        key = torch.where(active[:, None], k, state.key)
        started = state.started | active
        return Routing(prob[:, None], (prob >= 0.5)[:, None]), DynamicState(key, started)

    def state_after(self, x: Tensor, count: Tensor) -> DynamicState:
        k = self._key(x)  # (B, S, D): the queries of a prompt are never needed again
        rows = torch.arange(x.shape[0], device=x.device)
        key = torch.where((count > 0)[:, None], k[rows, (count - 1).clamp(min=0)], 0.0)
        return DynamicState(key, count > 0)

    def loss(self, routing: Routing, valid: Tensor | None) -> Tensor:
        """alpha x N / (N - 1) x ((N - 1) F G + (1 - F)(1 - G)): F the fraction of positions
        that are boundaries (not differentiable), G the mean probability. It is alpha where F = G
        = 1 / N; its gradient lowers G while more than one position in N is a boundary and raises
        it while fewer are."""
        prob = routing.prob.float()
        chosen = routing.boundary.float()
        if valid is None:
            f, g = chosen.mean(), prob.mean()
        else:
            weight = valid.float()
            n = weight.sum().clamp(min=1)
            f, g = (chosen * weight).sum() / n, (prob * weight).sum() / n
        n_target = self.target
        return self.loss_weight * n_target / (n_target - 1) * ((n_target - 1) * f * g + (1 - f) * (1 - g))
