"""Built-in stage ``transformer``: a pre-norm Llama block stack (docs/method.md section 1).

The module lives in ``aunet.plugins.nn.transformer`` and loads with torch, when a model is built.

Each block is ``x + Attn(RMSNorm(x))`` then ``h + SwiGLU(RMSNorm(h))``, no biases, RoPE over the
stage's own sequence index (a coarse stage counts segments, not bytes), causal attention within a
document, optionally within a sliding window. The SwiGLU hidden width follows the paper's
configurations: ``round_up(int(2 * 4 * dim / 3), ffn_multiple)`` (512 -> 1536, 2048 -> 5632), or
with the reference's ``ffn_dim_multiplier`` m, ``round_up(int(m * int(2 * 4 * dim / 3)), ffn_multiple)``
(Llama's rule). ``kv_heads`` below the number of heads is grouped-query attention: each key and
value head serves heads / kv_heads query heads, and the KV cache holds kv_heads heads.
The stack has no final norm: what consumes it (a pooler, an upsampler, the model's output)
normalizes its input.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from aunet.core import validators as v
from aunet.core.components import AttentionSpec, StageSpec
from aunet.core.errors import SpecIssue
from aunet.core.hookspecs import hookimpl
from aunet.core.init import Init
from aunet.core.registry import Registrar
from aunet.core.spec import Checkpointing
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
    ffn_dim_multiplier: float | None = attrs.field(default=None, validator=v.between(0.01, 100.0))
    """The reference's multiplier of the SwiGLU width before rounding (Llama's; None: 1)."""
    ffn_hidden: int | None = attrs.field(default=None, validator=v.between(1, 1 << 24, why="2^24"))
    """Explicit SwiGLU hidden width, overriding the rules above."""
    kv_heads: int | None = attrs.field(default=None, validator=v.between(1, 1 << 16))
    """Key and value heads (grouped-query attention); None: as many as query heads. Must divide
    the number of heads, dim / head_dim."""
    window: int | None = attrs.field(default=None, validator=v.positions)
    """Sliding attention window in positions of this stage (None: full causal)."""
    rope_theta: float = attrs.field(default=500_000.0, validator=v.positive)
    """RoPE base."""
    norm_eps: float = attrs.field(default=1e-5, validator=v.non_negative)
    """RMSNorm epsilon."""
    init: Init | None = None
    """``scaled`` or ``reference`` (``aunet.core.init``); None: the model's ``init``."""
    init_std: float = attrs.field(default=0.02, validator=v.non_negative)
    """Standard deviation of the ``scaled`` initialization (output projections are scaled down
    by sqrt(2 * layers)); ``reference`` uses fan_in ** -0.5 instead."""
    attention: AttentionSpec = attrs.field(factory=SdpaSpec)
    """The attention backend."""

    def hidden(self, dim: int) -> int:
        if self.ffn_hidden is not None:
            return self.ffn_hidden
        m = self.ffn_multiple
        hidden = int(2 * 4 * dim / 3)
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return m * math.ceil(hidden / m)

    def heads(self, dim: int) -> tuple[int, int]:
        """(query heads, key and value heads) at width ``dim``."""
        heads = dim // self.head_dim
        return heads, self.kv_heads or heads

    def check(self, *, path: str, dim: int | None = None, **_: int) -> list[SpecIssue]:
        if dim is not None and dim % self.head_dim:
            return [
                SpecIssue(
                    f"{path}.head_dim",
                    f"{self.head_dim} does not divide the level's dim {dim}; "
                    f"pick a head_dim such as {_divisor_near(dim, self.head_dim)}",
                )
            ]
        if dim is not None and self.kv_heads is not None:
            heads = dim // self.head_dim
            if heads % self.kv_heads:
                return [
                    SpecIssue(
                        f"{path}.kv_heads",
                        f"{self.kv_heads} does not divide the {heads} heads "
                        f"(dim {dim} / head_dim {self.head_dim}); pick one of "
                        f"{', '.join(str(d) for d in range(1, heads + 1) if heads % d == 0)}",
                    )
                ]
        return []

    def build(self, *, dim: int, device: Any = None) -> TransformerStage:
        import torch

        from aunet.plugins.nn.transformer import TransformerStage

        return TransformerStage(
            dim=dim,
            layers=self.layers,
            head_dim=self.head_dim,
            kv_heads=self.heads(dim)[1],
            hidden=self.hidden(dim),
            window=self.window,
            rope_theta=self.rope_theta,
            norm_eps=self.norm_eps,
            init=self.init,
            init_std=self.init_std,
            backend=self.attention.resolve(device=torch.device(device or "cpu")),
        )

    def training_problems(self, *, device: Any, bfloat16: bool) -> list[str]:
        problem = self.attention.trains_on(device=device, bfloat16=bfloat16)
        return [problem] if problem else []

    def parameter_count(self, *, dim: int) -> int:
        heads, kv_heads = self.heads(dim)
        kv_dim = dim * kv_heads // heads
        per_layer = 2 * dim * dim + 2 * dim * kv_dim + 3 * dim * self.hidden(dim) + 2 * dim
        return self.layers * per_layer

    def flops_per_position(self, *, dim: int, attended: float) -> float:
        if self.window is not None:
            attended = min(attended, self.window)
        return 6 * self.parameter_count(dim=dim) + 6 * dim * self.layers * attended

    def reference_flops_per_position(self, *, dim: int, attended: float) -> float:
        if self.window is not None:
            attended = min(attended, self.window)
        return 6 * self.parameter_count(dim=dim) + 3.5 * 4 * self.layers * attended * dim / 2

    def block_activation_bytes(self, *, dim: int, bfloat16: bool) -> float:
        """Bytes one block saves for backward per position: float32 36 d + 12 kv + 16 hidden +
        4 heads + 40, bfloat16 autocast 26 d + 6 kv + 8 hidden + 4 heads + 40 (kv = kv_heads x
        head_dim). Fitted to what ``saved_tensors_hooks`` sees of this implementation (within
        1% over widths 64 to 512, hidden 128 to 1,536, grouped or not; a test holds it), with a
        fused attention kernel: no score matrix is kept."""
        heads, kv_heads = self.heads(dim)
        kv, hidden = kv_heads * self.head_dim, self.hidden(dim)
        if bfloat16:
            return 26 * dim + 6 * kv + 8 * hidden + 4 * heads + 40
        return 36 * dim + 12 * kv + 16 * hidden + 4 * heads + 40

    def activation_bytes_per_position(self, *, dim: int, bfloat16: bool, checkpointing: Checkpointing) -> float:
        block = self.block_activation_bytes(dim=dim, bfloat16=bfloat16)
        recomputed = {
            Checkpointing.NONE: 0,
            Checkpointing.SELECTIVE: (self.layers + 1) // 2,
            Checkpointing.FULL: self.layers,
        }[checkpointing]
        # A recomputed block keeps its float32 input, and one block's activations exist again
        # while its backward runs.
        kept = (self.layers - recomputed) * block + recomputed * 4 * dim
        return kept + (block if recomputed else 0)


def _divisor_near(dim: int, want: int) -> int:
    """The divisor of ``dim`` closest to ``want`` (O(sqrt(dim)))."""
    small = [d for d in range(1, math.isqrt(dim) + 1) if dim % d == 0]
    divisors = small + [dim // d for d in small]
    return min(divisors, key=lambda d: (abs(d - want), d))


@hookimpl
def aunet_register_stages(registry: Registrar) -> None:
    registry.add_stage(TransformerSpec)
