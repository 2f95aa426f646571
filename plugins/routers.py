"""Built-in router (docs/method.md section 10): ``dynamic``, H-Net's dynamic chunking.

A router decides a level's boundaries from the encoder output of the level below instead of a
rule over the text (``aunet.core.modules.Router`` states the contract). ``dynamic`` compares each
position with the one before it: p_t = (1 - cos(W_q x_t, W_k x_{t-1})) / 2, a boundary where
p_t >= 0.5, so a segment closes where the representation changes. A ratio loss pulls the
fraction of boundaries toward one in ``target`` (Hwang et al. 2025, "Dynamic Chunking for
End-to-End Hierarchical Sequence Modeling", section 2).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import attrs

from aunet.core import validators as v
from aunet.core.components import RouterSpec
from aunet.core.errors import SpecIssue
from aunet.core.hookspecs import hookimpl
from aunet.core.registry import Registrar

if TYPE_CHECKING:
    from aunet.core.modules import Router


@attrs.frozen(kw_only=True)
class DynamicSpec(RouterSpec):
    """H-Net's dynamic chunking: cosine routing, smoothing, ratio loss."""

    kind: ClassVar[str] = "dynamic"
    target: float = attrs.field(default=4.0, validator=v.positive)
    """Positions of the level below per segment the ratio loss aims at (H-Net's N; > 1)."""
    loss_weight: float = attrs.field(default=0.03, validator=v.non_negative)
    """Weight of the ratio loss beside the next-byte loss (H-Net's alpha, 0.03)."""
    smoothing: bool = True
    """Smooth the coarse vectors on the way back with the boundary probabilities (H-Net's EMA:
    a segment of low confidence borrows from the one before); false upsamples them as they are."""

    def check(self, *, path: str, **dims: int) -> list[SpecIssue]:
        if self.target <= 1:
            return [
                SpecIssue(
                    f"{path}.target",
                    f"{self.target} positions per segment; the target must be above 1 (e.g. 4.0: "
                    "one boundary in four positions of the level below)",
                )
            ]
        return []

    @property
    def ratio(self) -> float:
        return self.target

    def build(self, *, dim: int) -> Router:
        from aunet.plugins.nn.routers import DynamicRouter

        return DynamicRouter(dim, target=self.target, loss_weight=self.loss_weight, smoothing=self.smoothing)

    def parameter_count(self, *, dim: int) -> int:
        return 2 * dim * dim  # W_q and W_k

    def flops_per_position(self, *, dim: int) -> float:
        return 6.0 * self.parameter_count(dim=dim)


@hookimpl
def aunet_register_routers(registry: Registrar) -> None:
    registry.add_router(DynamicSpec)
