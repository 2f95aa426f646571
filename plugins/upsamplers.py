"""Built-in upsamplers (docs/method.md section 4): ``multi-linear`` (the paper's default), ``repeat``
and ``simple`` (its ablations).

Fine position j belongs to the segment of the last boundary at or before it (``segment[j]``) and
sits ``offset[j]`` positions after that boundary. All three normalize the coarse vector first
(u = RMSNorm(coarse)), then:

* ``multi-linear``: out_j = W_up u + W_o u with one matrix W_o per offset o (16 by default; offsets
  beyond wrap around, as in the reference, or clamp to the last matrix). Computed without any loop
  over offsets: every coarse vector is projected once through all (W_up + W_o), then each fine
  position gathers its row. No host synchronisation, no data-dependent shapes.
* ``repeat``: out_j = W_up u for every fine position of the segment; with ``offset_embedding``, as
  the reference's, out_j = W_up u + E[o], E a learned (offsets, dim_fine) embedding of the offset
  (16 rows, wrapped or clamped like ``multi-linear``'s).
* ``simple``: out_j = W_up u at the boundary position itself (offset 0), zero elsewhere.

Every kind takes ``init`` (``scaled`` or ``reference``, default: the model's; ``aunet.core.init``):
``reference`` draws the matrices with std dim_coarse ** -0.5, and the offset embedding with std
dim_fine ** -0.5, as embeddings are.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, ClassVar

import attrs

from aunet.core.components import UpsamplerSpec
from aunet.core.hookspecs import hookimpl
from aunet.core.init import Init
from aunet.core.registry import Registrar
from aunet.core.validators import between

if TYPE_CHECKING:
    from aunet.plugins.nn.upsamplers import MultiLinearUpsampler, RepeatUpsampler


class OffsetMode(enum.Enum):
    """What ``multi-linear`` does with offsets past its last matrix."""

    WRAP = "wrap"  # offset mod n (the reference)
    CLAMP = "clamp"  # min(offset, n - 1)


@attrs.frozen(kw_only=True)
class MultiLinearSpec(UpsamplerSpec):
    """One projection per offset from the boundary (the paper's default, 16 offsets)."""

    kind: ClassVar[str] = "multi-linear"
    offsets: int = attrs.field(default=16, validator=between(1, 4096))
    """Number of offset matrices."""
    mode: OffsetMode = OffsetMode.WRAP
    """Offsets past the last matrix: "wrap" (mod offsets, the reference) or "clamp"."""
    norm_eps: float = 1e-5
    """RMSNorm epsilon."""
    init: Init | None = None
    """``scaled`` or ``reference``; None: the model's ``init``."""
    init_std: float = 0.02
    """Standard deviation of the projections' ``scaled`` initialization."""

    def build(self, *, dim_coarse: int, dim_fine: int) -> MultiLinearUpsampler:
        from aunet.plugins.nn.upsamplers import MultiLinearUpsampler

        return MultiLinearUpsampler(
            dim_coarse=dim_coarse,
            dim_fine=dim_fine,
            offsets=self.offsets,
            wrap=self.mode is OffsetMode.WRAP,
            norm_eps=self.norm_eps,
            init=self.init,
            init_std=self.init_std,
        )

    def parameter_count(self, *, dim_coarse: int, dim_fine: int) -> int:
        return dim_coarse + (1 + self.offsets) * dim_coarse * dim_fine


@attrs.frozen(kw_only=True)
class _OneProjectionSpec(UpsamplerSpec):
    """Options of the one-projection upsamplers (``simple`` and ``repeat`` are siblings, so that
    neither is an instance of the other)."""

    norm_eps: float = 1e-5
    """RMSNorm epsilon."""
    init: Init | None = None
    """``scaled`` or ``reference``; None: the model's ``init``."""
    init_std: float = 0.02
    """Standard deviation of the projection's ``scaled`` initialization."""


@attrs.frozen(kw_only=True)
class SimpleSpec(_OneProjectionSpec):
    """The projection at the boundary position only (ablation)."""

    kind: ClassVar[str] = "simple"

    def build(self, *, dim_coarse: int, dim_fine: int) -> RepeatUpsampler:
        from aunet.plugins.nn.upsamplers import RepeatUpsampler

        return RepeatUpsampler(
            dim_coarse=dim_coarse,
            dim_fine=dim_fine,
            only_boundary=True,
            norm_eps=self.norm_eps,
            init=self.init,
            init_std=self.init_std,
        )

    def parameter_count(self, *, dim_coarse: int, dim_fine: int) -> int:
        return dim_coarse + dim_coarse * dim_fine


@attrs.frozen(kw_only=True)
class RepeatSpec(_OneProjectionSpec):
    """One projection, repeated over the segment (ablation); with ``offset_embedding``, the
    reference's ``repeat``."""

    kind: ClassVar[str] = "repeat"
    offset_embedding: bool = False
    """Add a learned embedding of the offset within the segment (the reference's repeat)."""
    offsets: int = attrs.field(default=16, validator=between(1, 4096))
    """Rows of the offset embedding."""
    mode: OffsetMode = OffsetMode.WRAP
    """Offsets past the last row: "wrap" (mod offsets, the reference) or "clamp"."""

    def build(self, *, dim_coarse: int, dim_fine: int) -> RepeatUpsampler:
        from aunet.plugins.nn.upsamplers import RepeatUpsampler

        return RepeatUpsampler(
            dim_coarse=dim_coarse,
            dim_fine=dim_fine,
            only_boundary=False,
            norm_eps=self.norm_eps,
            init=self.init,
            init_std=self.init_std,
            offsets=self.offsets if self.offset_embedding else 0,
            wrap=self.mode is OffsetMode.WRAP,
        )

    def parameter_count(self, *, dim_coarse: int, dim_fine: int) -> int:
        embedding = self.offsets * dim_fine if self.offset_embedding else 0
        return dim_coarse + dim_coarse * dim_fine + embedding


@hookimpl
def aunet_register_upsamplers(registry: Registrar) -> None:
    for cls in (MultiLinearSpec, RepeatSpec, SimpleSpec):
        registry.add_upsampler(cls)
