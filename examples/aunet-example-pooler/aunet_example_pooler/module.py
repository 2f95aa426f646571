"""The ``max`` pooler module: a full form by scatter (no loop, no host sync) and a decoding
form with a running maximum, which ``check_pooler`` holds equal."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from aunet.core import LevelIndex, Pooler, where_rows


class MaxPooler(Pooler):
    def __init__(self, *, dim_in: int, dim_out: int, init_std: float) -> None:
        super().__init__()
        self.dim_in = dim_in
        self.norm = nn.RMSNorm(dim_in)
        self.proj = nn.Linear(dim_in, dim_out, bias=False)
        nn.init.normal_(self.proj.weight, std=init_std)

    def forward(self, x: Tensor, level: LevelIndex) -> Tensor:
        b, _, d = x.shape
        s = level.index.shape[1]
        members = level.members[..., None].expand(-1, -1, d)  # (B, T, D)
        best = x.new_full((b, s + 1, d), float("-inf")).scatter_reduce(1, members, x, "amax")[:, :s]
        return self.proj(self.norm(torch.where(torch.isfinite(best), best, 0.0)))  # (B, S, D_out)

    def initial_state(self, *, batch: int, device: Any, dtype: torch.dtype) -> Any:
        return torch.full((batch, self.dim_in), float("-inf"), device=device, dtype=dtype)

    def step(self, x: Tensor, state: Any, *, active: Tensor, boundary: Tensor) -> tuple[Tensor, Any]:
        best = where_rows(active, torch.maximum(state, x[:, 0]), state)  # (B, D_in)
        out = self.proj(self.norm(torch.where(torch.isfinite(best), best, 0.0)))[:, None]
        return out, where_rows(active & boundary, torch.full_like(best, float("-inf")), best)
