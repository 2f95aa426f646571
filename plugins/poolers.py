"""Built-in poolers (docs/method.md section 3): ``select`` (the paper's), ``mean`` and
``attention``.

A segment is the positions after the previous boundary up to its own boundary; its coarse vector
may depend on those and nothing later, which keeps the model causal whatever the pooler.

* ``select``: the fine vector at the boundary, RMSNorm, Linear(dim_in -> dim_out), no bias. No
  averaging and no cross-attention: causal self-attention has already summarised everything up
  to the boundary into that vector.
* ``mean``: the mean of the segment's positions (the boundary included), RMSNorm, Linear.
* ``non_param = true`` (``select`` and ``mean``): no norm and no projection, the reference's
  parameter-free pooling, for levels as wide as the level below.
* ``attention``: a learned query attends over the segment's positions (softmax within the
  segment; scores q . RMSNorm(x) / sqrt(dim_in)), then Linear: the word encoders of hierarchical
  models. Decoding keeps an online softmax (running max, sum and weighted sum) per row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import attrs

from aunet.core import validators as v
from aunet.core.components import PoolerSpec
from aunet.core.errors import SpecIssue
from aunet.core.hookspecs import hookimpl
from aunet.core.init import Init
from aunet.core.registry import Registrar

if TYPE_CHECKING:
    from aunet.core.modules import Pooler


@attrs.frozen(kw_only=True)
class _ProjectedSpec(PoolerSpec):
    """Options every built-in pooler shares: its RMSNorm and its projection's initialization."""

    norm_eps: float = attrs.field(default=1e-5, validator=v.positive)
    """RMSNorm epsilon."""
    init: Init | None = None
    """``scaled`` or ``reference`` (``aunet.core.init``); None: the model's ``init``."""
    init_std: float = attrs.field(default=0.02, validator=v.non_negative)
    """Standard deviation of the projection's ``scaled`` initialization (``reference``: dim_in ** -0.5)."""

    def _options(self) -> dict:
        return {"norm_eps": self.norm_eps, "init_std": self.init_std, "init": self.init}


@attrs.frozen(kw_only=True)
class SelectSpec(_ProjectedSpec):
    """Gather at boundaries, RMSNorm, Linear (the paper's pooling)."""

    kind: ClassVar[str] = "select"
    non_param: bool = False
    """No norm and no projection: the pooled vectors are the fine ones (the reference's
    ``non_param``). Needs the level's width equal to the level below's."""

    def check(self, *, path: str, dim_in: int | None = None, dim_out: int | None = None, **_: int) -> list[SpecIssue]:
        if self.non_param and dim_in is not None and dim_out is not None and dim_in != dim_out:
            return [
                SpecIssue(
                    f"{path}.non_param",
                    f"pooling without parameters keeps the width, but the level "
                    f"below has dim {dim_in} and this level {dim_out}; give both the same dim, or "
                    "set non_param = false",
                )
            ]
        return []

    def build(self, *, dim_in: int, dim_out: int) -> Pooler:
        from aunet.plugins.nn.poolers import SelectPooler

        return SelectPooler(dim_in=dim_in, dim_out=dim_out, non_param=self.non_param, **self._options())

    def parameter_count(self, *, dim_in: int, dim_out: int) -> int:
        return 0 if self.non_param else dim_in + dim_in * dim_out


@attrs.frozen(kw_only=True)
class MeanSpec(SelectSpec):
    """Mean of the segment's positions, RMSNorm, Linear."""

    kind: ClassVar[str] = "mean"

    def build(self, *, dim_in: int, dim_out: int) -> Pooler:
        from aunet.plugins.nn.poolers import MeanPooler

        return MeanPooler(dim_in=dim_in, dim_out=dim_out, non_param=self.non_param, **self._options())


@attrs.frozen(kw_only=True)
class AttentionPoolerSpec(_ProjectedSpec):
    """A learned query attends over the segment's positions, then Linear."""

    kind: ClassVar[str] = "attention"

    def build(self, *, dim_in: int, dim_out: int) -> Pooler:
        from aunet.plugins.nn.poolers import AttentionPooler

        return AttentionPooler(dim_in=dim_in, dim_out=dim_out, **self._options())

    def parameter_count(self, *, dim_in: int, dim_out: int) -> int:
        return 2 * dim_in + dim_in * dim_out


@hookimpl
def aunet_register_poolers(registry: Registrar) -> None:
    for cls in (SelectSpec, MeanSpec, AttentionPoolerSpec):
        registry.add_pooler(cls)
