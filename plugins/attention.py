"""Built-in attention backends (the contract: ``aunet.core.modules.AttentionBackend``).

* ``sdpa``: PyTorch's ``scaled_dot_product_attention``, any device. It picks the cheapest exact
  call per level: ``is_causal`` for one document per row without a window; a blockwise band for
  a sliding window shorter than the sequence (memory linear in T for a fixed window: the byte
  stage at 8,192 positions never builds a (T, T) mask); a dense mask otherwise. ``kernel`` pins
  SDPA's kernel (``flash``, ``efficient``, ``cudnn``, ``math``) for profiling.
* ``math``: softmax attention written out in float32 with a dense mask: slow, obviously correct,
  the tests' reference.
* ``flex``: ``torch.nn.attention.flex_attention`` with composed mask functions (causal, sliding
  window, same document) in a ``BlockMask`` built once per level per forward, and the kernel
  compiled once per process. Inference on any device (unfused on a CPU unless ``compile``);
  training needs CUDA (torch has no FlexAttention backward on a CPU).
* ``flash``: variable-length flash attention over packed documents, with the sliding window: the
  ``flash-attn`` package's ``flash_attn_varlen_func`` when installed (``pip install aunet[flash]``),
  else ``torch.nn.attention.varlen.varlen_attn``. CUDA, bfloat16 or float16 only.

Every backend also accepts a dense mask (``DensePlan``): incremental decoding attends one query (or
a prompt's few) against the KV cache with it. The modules live in ``aunet.plugins.nn.attention``
and load with torch, when a model is built.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from aunet.core.components import AttentionSpec
from aunet.core.errors import AunetError
from aunet.core.hookspecs import hookimpl
from aunet.core.registry import Registrar

if TYPE_CHECKING:
    from aunet.core.modules import AttentionBackend

ELSEWHERE = "sdpa (any device) or math"


class SdpaKernel(enum.Enum):
    """SDPA kernels that ``sdpa`` can be pinned to (``torch.nn.attention.SDPBackend``)."""

    FLASH = "flash"
    EFFICIENT = "efficient"
    CUDNN = "cudnn"
    MATH = "math"


@attrs.frozen(kw_only=True)
class SdpaSpec(AttentionSpec):
    """PyTorch's scaled_dot_product_attention, planned per level (any device)."""

    kind: ClassVar[str] = "sdpa"
    kernel: SdpaKernel | None = None
    """Pin SDPA to one kernel (flash, efficient, cudnn, math); none lets PyTorch choose."""

    def resolve(self, *, device: Any) -> AttentionBackend:
        from aunet.plugins.nn.attention import SdpaBackend

        return SdpaBackend(kernel=None if self.kernel is None else self.kernel.value)


@attrs.frozen(kw_only=True)
class MathSpec(AttentionSpec):
    """Plain softmax attention in float32: slow, obviously correct, the tests' reference."""

    kind: ClassVar[str] = "math"

    def resolve(self, *, device: Any) -> AttentionBackend:
        from aunet.plugins.nn.attention import MathBackend

        return MathBackend()


@attrs.frozen(kw_only=True)
class FlexSpec(AttentionSpec):
    """FlexAttention with a BlockMask per level (causal, window, documents); trains on CUDA."""

    kind: ClassVar[str] = "flex"
    compile: bool | None = None
    """Compile the kernel (once per process): none compiles on CUDA only (on a CPU, compiling
    takes seconds per shape; the unfused form is exact and fine for inference)."""

    def resolve(self, *, device: Any) -> AttentionBackend:
        from aunet.plugins.nn.attention import FlexBackend

        return FlexBackend(compile=device.type == "cuda" if self.compile is None else self.compile)

    def trains_on(self, *, device: Any, bfloat16: bool) -> str | None:
        if device.type != "cuda":
            return (
                f"flex cannot train on {device.type}: torch has no FlexAttention backward there (inference "
                'works); train with attention = { kind = "sdpa" }, or on CUDA'
            )
        return None


class FlashImplementation(enum.Enum):
    AUTO = "auto"  # flash-attn when installed, else torch's varlen_attn
    FLASH_ATTN = "flash-attn"
    TORCH = "torch"


@attrs.frozen(kw_only=True)
class FlashSpec(AttentionSpec):
    """Variable-length flash attention over packed documents (CUDA, bf16/fp16)."""

    kind: ClassVar[str] = "flash"
    implementation: FlashImplementation = FlashImplementation.AUTO
    """``flash-attn`` (the package's flash_attn_varlen_func), ``torch`` (torch.nn.attention.varlen)
    or ``auto`` (the package when installed)."""

    def resolve(self, *, device: Any) -> AttentionBackend:
        from aunet.plugins.nn.attention import FlashBackend, flash_kernel

        if device.type != "cuda":
            raise AunetError(self._not_here(device))
        found = flash_kernel(self.implementation.value)
        if found.kernel is None:
            raise AunetError(
                f"attention kind 'flash' needs the flash-attn package (pip install aunet[flash]) or a "
                f"torch with torch.nn.attention.varlen ({found.unavailable}); use {ELSEWHERE} or flex"
            )
        return FlashBackend(kernel=found.kernel, name=found.name)

    def trains_on(self, *, device: Any, bfloat16: bool) -> str | None:
        if device.type != "cuda":
            return self._not_here(device)
        if not bfloat16:
            return (
                "attention kind 'flash' computes in bfloat16 or float16; set train.precision = \"bfloat16\" "
                '(or "auto" on CUDA), or use sdpa'
            )
        return None

    @staticmethod
    def _not_here(device: Any) -> str:
        return (
            f"attention kind 'flash' needs a CUDA device (and bfloat16 or float16: precision = \"bfloat16\", or "
            f'"auto" on CUDA); this model is built for {device.type}; use {ELSEWHERE} there, or flex for '
            "inference"
        )


@hookimpl
def aunet_register_attention(registry: Registrar) -> None:
    for cls in (SdpaSpec, MathSpec, FlexSpec, FlashSpec):
        registry.add_attention(cls)
