"""The ``select`` pooler module (spec: ``aunet.plugins.poolers``)."""

from __future__ import annotations

from torch import Tensor, nn

from aunet.core.modules import Pooler, gather_rows


class SelectPooler(Pooler):
    """RMSNorm and Linear of the fine vector at each boundary."""

    def __init__(self, *, dim_in: int, dim_out: int, norm_eps: float, init_std: float) -> None:
        super().__init__()
        self.norm = nn.RMSNorm(dim_in, eps=norm_eps)
        self.proj = nn.Linear(dim_in, dim_out, bias=False)
        nn.init.normal_(self.proj.weight, std=init_std)

    def forward(self, x: Tensor, index: Tensor) -> Tensor:
        return self.proj(self.norm(gather_rows(x, index)))  # (B, S, D_out)
