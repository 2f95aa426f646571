"""Built-in poolers (docs/method.md section 3): ``select`` (the paper's), ``mean`` and
``attention``.

A segment is the positions after the previous boundary up to its own boundary; its coarse vector
may depend on those and nothing later, which keeps the model causal whatever the pooler.

* ``select``: the fine vector at the boundary, RMSNorm, Linear(dim_in -> dim_out), no bias. No
  averaging and no cross-attention: causal self-attention has already summarised everything up
  to the boundary into that vector.
* ``mean``: the mean of the segment's positions (the boundary included), RMSNorm, Linear.
* ``attention``: a learned query attends over the segment's positions (softmax within the
  segment; scores q . RMSNorm(x) / sqrt(dim_in)), then Linear: the word encoders of hierarchical
  models. Decoding keeps an online softmax (running max, sum and weighted sum) per row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import attrs

from aunet.core import validators as v
from aunet.core.components import PoolerSpec
from aunet.core.hookspecs import hookimpl
from aunet.core.registry import Registrar

if TYPE_CHECKING:
    from aunet.core.modules import Pooler


@attrs.frozen(kw_only=True)
class SelectSpec(PoolerSpec):
    """Gather at boundaries, RMSNorm, Linear (the paper's pooling)."""

    kind: ClassVar[str] = "select"
    norm_eps: float = attrs.field(default=1e-5, validator=v.positive)
    """RMSNorm epsilon."""
    init_std: float = attrs.field(default=0.02, validator=v.non_negative)
    """Standard deviation of the projection's initialization."""

    def build(self, *, dim_in: int, dim_out: int) -> Pooler:
        from aunet.plugins.nn.poolers import SelectPooler

        return SelectPooler(dim_in=dim_in, dim_out=dim_out, norm_eps=self.norm_eps, init_std=self.init_std)

    def parameter_count(self, *, dim_in: int, dim_out: int) -> int:
        return dim_in + dim_in * dim_out


@attrs.frozen(kw_only=True)
class MeanSpec(SelectSpec):
    """Mean of the segment's positions, RMSNorm, Linear."""

    kind: ClassVar[str] = "mean"

    def build(self, *, dim_in: int, dim_out: int) -> Pooler:
        from aunet.plugins.nn.poolers import MeanPooler

        return MeanPooler(dim_in=dim_in, dim_out=dim_out, norm_eps=self.norm_eps, init_std=self.init_std)


@attrs.frozen(kw_only=True)
class AttentionPoolerSpec(SelectSpec):
    """A learned query attends over the segment's positions, then Linear."""

    kind: ClassVar[str] = "attention"

    def build(self, *, dim_in: int, dim_out: int) -> Pooler:
        from aunet.plugins.nn.poolers import AttentionPooler

        return AttentionPooler(dim_in=dim_in, dim_out=dim_out, norm_eps=self.norm_eps, init_std=self.init_std)

    def parameter_count(self, *, dim_in: int, dim_out: int) -> int:
        return 2 * dim_in + dim_in * dim_out


@hookimpl
def aunet_register_poolers(registry: Registrar) -> None:
    for cls in (SelectSpec, MeanSpec, AttentionPoolerSpec):
        registry.add_pooler(cls)
