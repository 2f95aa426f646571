"""Built-in pooler ``select`` (docs/method.md section 3): gather the fine vectors at the boundaries,
RMSNorm, Linear(dim_in -> dim_out), no bias. No averaging and no cross-attention: causal
self-attention has already summarised everything up to the boundary into that vector."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import attrs

from aunet.core.components import PoolerSpec
from aunet.core.hookspecs import hookimpl
from aunet.core.registry import Registrar

if TYPE_CHECKING:
    from aunet.plugins.nn.poolers import SelectPooler


@attrs.frozen(kw_only=True)
class SelectSpec(PoolerSpec):
    """Gather at boundaries, RMSNorm, Linear (the paper's pooling)."""

    kind: ClassVar[str] = "select"
    norm_eps: float = 1e-5
    """RMSNorm epsilon."""
    init_std: float = 0.02
    """Standard deviation of the projection's initialization."""

    def build(self, *, dim_in: int, dim_out: int) -> SelectPooler:
        from aunet.plugins.nn.poolers import SelectPooler

        return SelectPooler(dim_in=dim_in, dim_out=dim_out, norm_eps=self.norm_eps, init_std=self.init_std)

    def parameter_count(self, *, dim_in: int, dim_out: int) -> int:
        return dim_in + dim_in * dim_out


@hookimpl
def aunet_register_poolers(registry: Registrar) -> None:
    registry.add_pooler(SelectSpec)
