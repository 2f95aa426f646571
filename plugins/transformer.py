"""Built-in stage ``transformer``: a pre-norm Llama block stack (docs/method.md section 1).

The module lives in ``aunet.plugins.nn.transformer`` and loads with torch, when a model is built.

Each block is ``x + Attn(RMSNorm(x))`` then ``h + SwiGLU(RMSNorm(h))``, no biases, RoPE over the
stage's own sequence index (a coarse stage counts segments, not bytes), causal attention within a
document, optionally within a sliding window. The SwiGLU hidden width follows the paper's
configurations: ``round_up(int(2 * 4 * dim / 3), ffn_multiple)`` (512 -> 1536, 2048 -> 5632).
The stack has no final norm: what consumes it (a pooler, an upsampler, the model's output)
normalizes its input.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from aunet.core.components import AttentionSpec, StageSpec
from aunet.core.errors import SpecIssue
from aunet.core.hookspecs import hookimpl
from aunet.core.registry import Registrar
from aunet.core import validators as v
from aunet.plugins.attention import SdpaSpec

if TYPE_CHECKING:
    from aunet.plugins.nn.transformer import TransformerStage


@attrs.frozen(kw_only=True)
class TransformerSpec(StageSpec):
    """Pre-norm Llama blocks: RMSNorm, RoPE, SwiGLU, no biases."""

    kind: ClassVar[str] = "transformer"

    layers: int = attrs.field(validator=v.layers)
    """Blocks in the stack (the encoder and the decoder of a level have this many each)."""
    head_dim: int = attrs.field(default=64, validator=v.width)
    """Width of one attention head; heads = dim / head_dim."""
    ffn_multiple: int = attrs.field(default=256, validator=v.width)
    """SwiGLU hidden width is round_up(int(8 * dim / 3), ffn_multiple)."""
    ffn_hidden: int | None = attrs.field(default=None, validator=v.between(1, 1 << 24, why="2^24"))
    """Explicit SwiGLU hidden width, overriding the rule above."""
    window: int | None = attrs.field(default=None, validator=v.positions)
    """Sliding attention window in positions of this stage (None: full causal)."""
    rope_theta: float = attrs.field(default=500_000.0, validator=v.positive)
    """RoPE base."""
    norm_eps: float = attrs.field(default=1e-5, validator=v.non_negative)
    """RMSNorm epsilon."""
    init_std: float = attrs.field(default=0.02, validator=v.non_negative)
    """Standard deviation of the weight initialization (output projections are scaled down by
    sqrt(2 * layers))."""
    attention: AttentionSpec = attrs.field(factory=SdpaSpec)
    """The attention backend."""

    def hidden(self, dim: int) -> int:
        if self.ffn_hidden is not None:
            return self.ffn_hidden
        m = self.ffn_multiple
        return m * math.ceil(int(2 * 4 * dim / 3) / m)

    def check(self, *, path: str, dim: int | None = None, **_: int) -> list[SpecIssue]:
        if dim is not None and dim % self.head_dim:
            return [SpecIssue(f"{path}.head_dim", f"{self.head_dim} does not divide the level's dim {dim}; "
                              f"pick a head_dim such as {_divisor_near(dim, self.head_dim)}")]  # fmt: skip
        return []

    def build(self, *, dim: int, device: Any = None) -> TransformerStage:
        import torch

        from aunet.plugins.nn.transformer import TransformerStage

        return TransformerStage(dim=dim, layers=self.layers, head_dim=self.head_dim, hidden=self.hidden(dim),
                                window=self.window, rope_theta=self.rope_theta, norm_eps=self.norm_eps,
                                init_std=self.init_std, backend=self.attention.resolve(device=torch.device(device or "cpu")))  # fmt: skip

    def training_problems(self, *, device: Any, bfloat16: bool) -> list[str]:
        problem = self.attention.trains_on(device=device, bfloat16=bfloat16)
        return [problem] if problem else []

    def parameter_count(self, *, dim: int) -> int:
        per_layer = 4 * dim * dim + 3 * dim * self.hidden(dim) + 2 * dim
        return self.layers * per_layer

    def flops_per_position(self, *, dim: int, attended: float) -> float:
        if self.window is not None:
            attended = min(attended, self.window)
        return 6 * self.parameter_count(dim=dim) + 6 * dim * self.layers * attended


def _divisor_near(dim: int, want: int) -> int:
    """The divisor of ``dim`` closest to ``want`` (O(sqrt(dim)))."""
    small = [d for d in range(1, math.isqrt(dim) + 1) if dim % d == 0]
    divisors = small + [dim // d for d in small]
    return min(divisors, key=lambda d: (abs(d - want), d))


@hookimpl
def aunet_register_stages(registry: Registrar) -> None:
    registry.add_stage(TransformerSpec)
