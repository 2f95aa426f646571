"""An example third-party aunet pooler: ``max``, the elementwise maximum of each segment's
positions (the boundary included), then RMSNorm and Linear.

The spec class (torch-free, its fields the spec options) and the module (torch, plain arguments)
are all a pooler needs; the hook registers the spec. ``aunet.testing.check_pooler(MaxSpec())``
checks it against every invariant the assembler relies on (``tests/test_max_pooler.py``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

from aunet.core import PoolerSpec, hookimpl


@attrs.frozen(kw_only=True)
class MaxSpec(PoolerSpec):
    """Elementwise maximum over the segment's positions, RMSNorm, Linear."""

    kind: ClassVar[str] = "max"
    init_std: float = 0.02
    """Standard deviation of the projection's initialization."""

    def build(self, *, dim_in: int, dim_out: int) -> Any:
        from aunet_example_pooler.module import MaxPooler

        return MaxPooler(dim_in=dim_in, dim_out=dim_out, init_std=self.init_std)

    def parameter_count(self, *, dim_in: int, dim_out: int) -> int:
        return dim_in + dim_in * dim_out


@hookimpl
def aunet_register_poolers(registry: Any) -> None:
    registry.add_pooler(MaxSpec)
