"""The ``select`` pooler module (spec: ``aunet.plugins.poolers``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor, nn

from aunet.core.modules import Pooler, gather_rows

if TYPE_CHECKING:
    from aunet.plugins.poolers import SelectSpec


class SelectPooler(Pooler):
    def __init__(self, spec: SelectSpec, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.norm = nn.RMSNorm(dim_in, eps=spec.norm_eps)
        self.proj = nn.Linear(dim_in, dim_out, bias=False)
        nn.init.normal_(self.proj.weight, std=spec.init_std)

    def forward(self, x: Tensor, index: Tensor) -> Tensor:
        return self.proj(self.norm(gather_rows(x, index)))  # (B, S, D_out)
