"""The conformance kits: every built-in kind passes its family's kit, and each kit rejects a
deliberately broken component of its family (mutation proof), naming the invariant it broke."""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
import pytest
import torch
from torch import Tensor, nn

from aunet.core.components import AttentionSpec, PoolerSpec, StageSpec, UpsamplerSpec
from aunet.core.modules import AttentionBackend, Layout, LevelIndex, Pooler, Stage, Upsampler, gather_rows
from aunet.plugins.attention import FlexSpec, MathSpec, SdpaSpec
from aunet.plugins.nn.attention import SdpaBackend
from aunet.plugins.poolers import AttentionPoolerSpec, MeanSpec, SelectSpec
from aunet.plugins.transformer import TransformerSpec
from aunet.plugins.upsamplers import MultiLinearSpec, OffsetMode, RepeatSpec, SimpleSpec
from aunet.testing import check_attention, check_pooler, check_stage, check_upsampler

MODEL_EXAMPLES = 4  # per kind: the model-level properties of tests/test_model.py run more


@pytest.mark.parametrize("spec", [SelectSpec(), MeanSpec(), AttentionPoolerSpec()], ids=lambda s: s.kind)
def test_built_in_poolers_pass_their_kit(spec) -> None:
    check_pooler(spec, model_examples=MODEL_EXAMPLES)


@pytest.mark.parametrize("spec", [MultiLinearSpec(), MultiLinearSpec(offsets=3, mode=OffsetMode.CLAMP), RepeatSpec(),
                                  SimpleSpec(), RepeatSpec(offset_embedding=True, offsets=4)],
                         ids=["multi-linear", "multi-linear-clamp", "repeat", "simple", "repeat-offset-embedding"])  # fmt: skip
def test_built_in_upsamplers_pass_their_kit(spec) -> None:
    check_upsampler(spec, model_examples=MODEL_EXAMPLES)


@pytest.mark.parametrize("spec", [TransformerSpec(layers=2, head_dim=8), TransformerSpec(layers=1, head_dim=8, window=3),
                                  TransformerSpec(layers=1, head_dim=8, kv_heads=1, ffn_dim_multiplier=1.5)],
                         ids=["transformer", "transformer-window", "transformer-gqa"])  # fmt: skip
def test_built_in_stages_pass_their_kit(spec) -> None:
    check_stage(spec, model_examples=MODEL_EXAMPLES)


@pytest.mark.parametrize("spec", [SdpaSpec(), MathSpec(), FlexSpec()], ids=lambda s: s.kind)
def test_built_in_attention_passes_its_kit(spec) -> None:
    check_attention(spec, model_examples=MODEL_EXAMPLES if spec.kind != "flex" else 2)


# -- broken components ------------------------------------------------------------------------------


class PeekPooler(Pooler):
    """Pools the position after the boundary: it sees the next segment."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out, bias=False)

    def forward(self, x: Tensor, level: LevelIndex) -> Tensor:
        return self.proj(gather_rows(x, (level.index + 1).clamp(max=x.shape[1] - 1)))


class MixingPooler(PeekPooler):
    """Adds the mean over the batch's rows: rows mix."""

    def forward(self, x: Tensor, level: LevelIndex) -> Tensor:
        picked = gather_rows(x, level.index)
        return self.proj(picked + picked.mean(dim=0, keepdim=True))


@attrs.frozen
class BrokenPoolerSpec(PoolerSpec):
    kind: ClassVar[str] = "broken-pooler"
    module: type = PeekPooler

    def build(self, *, dim_in: int, dim_out: int) -> Pooler:
        return self.module(dim_in, dim_out)

    def parameter_count(self, *, dim_in: int, dim_out: int) -> int:
        return dim_in * dim_out


class NextUpsampler(Upsampler):
    """Hands position j the next boundary's vector."""

    def __init__(self, dim_coarse: int, dim_fine: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_coarse, dim_fine, bias=False)

    def forward(self, coarse: Tensor, segment: Tensor, offset: Tensor) -> Tensor:
        return gather_rows(self.proj(coarse), (segment + 1).clamp(max=coarse.shape[1] - 1))


@attrs.frozen
class BrokenUpsamplerSpec(UpsamplerSpec):
    kind: ClassVar[str] = "broken-upsampler"

    def build(self, *, dim_coarse: int, dim_fine: int) -> Upsampler:
        return NextUpsampler(dim_coarse, dim_fine)

    def parameter_count(self, *, dim_coarse: int, dim_fine: int) -> int:
        return dim_coarse * dim_fine


class AheadStage(Stage):
    """Mixes each position with the next one: it attends one step ahead."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x: Tensor, *, layout: Layout, cache: Any = None) -> Tensor:
        ahead = torch.cat([x[:, 1:], x[:, -1:]], dim=1)
        return x + self.proj(ahead)

    def new_cache(self, *, batch: int, capacity: int, device: Any, dtype: torch.dtype) -> Any:
        return None


@attrs.frozen
class BrokenStageSpec(StageSpec):
    kind: ClassVar[str] = "broken-stage"

    def build(self, *, dim: int, device: Any = None) -> Stage:
        return AheadStage(dim)

    def parameter_count(self, *, dim: int) -> int:
        return dim * dim

    def flops_per_position(self, *, dim: int, attended: float) -> float:
        return 6.0 * dim * dim


class NoDocumentsBackend(SdpaBackend):
    """Ignores the document mask."""

    def plan(self, layout: Layout, *, batch: int, length: int, window: int | None, device: Any) -> Any:
        return super().plan(Layout(), batch=batch, length=length, window=window, device=device)


class AheadBackend(SdpaBackend):
    """Lets each query see one key ahead."""

    def plan(self, layout: Layout, *, batch: int, length: int, window: int | None, device: Any) -> Any:
        from aunet.core.modules import DensePlan

        pos = torch.arange(length, device=device)
        return DensePlan((pos[None, :] <= pos[:, None] + 1)[None, None])


@attrs.frozen
class BrokenAttentionSpec(AttentionSpec):
    kind: ClassVar[str] = "broken-attention"
    backend: type = NoDocumentsBackend

    def resolve(self, *, device: Any) -> AttentionBackend:
        return self.backend()


@pytest.mark.parametrize(
    ("kit", "spec", "invariant"),
    [
        (check_pooler, BrokenPoolerSpec(), "causality (a segment's vector depends on no later position)"),
        (check_pooler, BrokenPoolerSpec(module=MixingPooler), "batch independence"),
        (check_upsampler, BrokenUpsamplerSpec(), "causality (a position sees its own segment's vector only)"),
        (check_stage, BrokenStageSpec(), "causality (position j depends on nothing after j)"),
        (check_attention, BrokenAttentionSpec(), "the masking rule"),
        (check_attention, BrokenAttentionSpec(backend=AheadBackend), "the masking rule"),
    ],
    ids=["pooler-sees-next-segment", "pooler-mixes-rows", "upsampler-next-boundary", "stage-one-step-ahead",
         "backend-ignores-documents", "backend-one-step-ahead"],  # fmt: skip
)
def test_each_kit_rejects_a_broken_component(kit, spec, invariant: str) -> None:
    with pytest.raises(AssertionError) as err:
        kit(spec, model_examples=0)
    message = str(err.value)
    assert message.startswith(f"{kit.__name__.removeprefix('check_')} 'broken-") and invariant in message, message


def test_a_broken_component_breaks_whole_models_too() -> None:
    # The model-level half of a kit, on its own: a pooler that sees the next segment makes the
    # model see the future (or decode other than it teacher-forces), with the falsifying example.
    from aunet.testing.kits import _models

    with pytest.raises(AssertionError, match="inside a model: (causality|generation equals teacher forcing)"):
        _models("pooler 'broken-pooler'", 10, shrink=False, pooler=BrokenPoolerSpec())
