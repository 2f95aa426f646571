"""Built-in attention backends: ``sdpa`` (PyTorch's scaled_dot_product_attention, any device)
and ``math`` (plain softmax attention in float32: the reference the tests compare against).

The modules live in ``aunet.plugins.nn.attention`` and load with torch, when a model is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from aunet.core.components import AttentionSpec
from aunet.core.hookspecs import hookimpl
from aunet.core.registry import Registrar

if TYPE_CHECKING:
    from aunet.core.modules import AttentionBackend


@attrs.frozen(kw_only=True)
class SdpaSpec(AttentionSpec):
    """PyTorch's scaled_dot_product_attention (CPU and CUDA; flash kernels when unmasked)."""

    kind: ClassVar[str] = "sdpa"

    def resolve(self, *, device: Any) -> AttentionBackend:
        from aunet.plugins.nn.attention import SdpaBackend

        return SdpaBackend()


@attrs.frozen(kw_only=True)
class MathSpec(AttentionSpec):
    """Plain softmax attention in float32: slow, obviously correct, the tests' reference."""

    kind: ClassVar[str] = "math"

    def resolve(self, *, device: Any) -> AttentionBackend:
        from aunet.plugins.nn.attention import MathBackend

        return MathBackend()


@hookimpl
def aunet_register_attention(registry: Registrar) -> None:
    registry.add_attention(SdpaSpec)
    registry.add_attention(MathSpec)
