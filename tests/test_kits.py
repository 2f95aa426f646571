"""The conformance kits: every built-in kind passes its family's kit, and each kit rejects a
deliberately broken component of its family (mutation proof), naming the invariant it broke."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aunet.plugins.attention import FlexSpec, MathSpec, SdpaSpec
from aunet.plugins.poolers import AttentionPoolerSpec, MeanSpec, SelectSpec
from aunet.plugins.routers import DynamicSpec
from aunet.plugins.transformer import TransformerSpec
from aunet.plugins.upsamplers import MultiLinearSpec, OffsetMode, RepeatSpec, SimpleSpec
from aunet.testing import check_attention, check_pooler, check_router, check_splitter, check_stage, check_upsampler

from mutants import (
    AheadBackend,
    BrokenAttentionSpec,
    BrokenPoolerSpec,
    BrokenRouterSpec,
    BrokenStageSpec,
    BrokenUpsamplerSpec,
    FirstTerminatorSplitter,
    MixingPooler,
    MixingRouter,
    StalePickUpsampler,
    WholeSequenceRouter,
)

MODEL_EXAMPLES = 4  # per kind: the model-level properties of tests/test_model.py run more


@pytest.mark.parametrize("spec", [SelectSpec(), MeanSpec(), AttentionPoolerSpec()], ids=lambda s: s.kind)
def test_built_in_poolers_pass_their_kit(spec) -> None:
    check_pooler(spec, model_examples=MODEL_EXAMPLES)


@pytest.mark.parametrize(
    "spec",
    [
        MultiLinearSpec(),
        MultiLinearSpec(offsets=3, mode=OffsetMode.CLAMP),
        RepeatSpec(),
        SimpleSpec(),
        RepeatSpec(offset_embedding=True, offsets=4),
    ],
    ids=["multi-linear", "multi-linear-clamp", "repeat", "simple", "repeat-offset-embedding"],
)
def test_built_in_upsamplers_pass_their_kit(spec) -> None:
    check_upsampler(spec, model_examples=MODEL_EXAMPLES)


@pytest.mark.parametrize(
    "spec",
    [
        TransformerSpec(layers=2, head_dim=8),
        TransformerSpec(layers=1, head_dim=8, window=3),
        TransformerSpec(layers=1, head_dim=8, kv_heads=1, ffn_dim_multiplier=1.5),
    ],
    ids=["transformer", "transformer-window", "transformer-gqa"],
)
def test_built_in_stages_pass_their_kit(spec) -> None:
    check_stage(spec, model_examples=MODEL_EXAMPLES)


@pytest.mark.parametrize("spec", [SdpaSpec(), MathSpec(), FlexSpec()], ids=lambda s: s.kind)
def test_built_in_attention_passes_its_kit(spec) -> None:
    # flex compiles anew for every shape drawn (on a CPU, seconds each): fewer examples of it.
    flex = spec.kind == "flex"
    check_attention(spec, examples=10 if flex else 30, model_examples=2 if flex else MODEL_EXAMPLES)


def test_the_built_in_router_passes_its_kit() -> None:
    check_router(DynamicSpec(), model_examples=MODEL_EXAMPLES)


# -- broken components (tests/mutants.py) -------------------------------------------------------


@pytest.mark.parametrize(
    ("kit", "spec", "invariant"),
    [
        (check_pooler, BrokenPoolerSpec(), "causality (a segment's vector depends on no later position)"),
        (check_pooler, BrokenPoolerSpec(module=MixingPooler), "batch independence"),
        (check_upsampler, BrokenUpsamplerSpec(), "causality (a position sees its own segment's vector only)"),
        (check_upsampler, BrokenUpsamplerSpec(module=StalePickUpsampler), "what it prepares, picked at an offset"),
        (check_stage, BrokenStageSpec(), "causality (position j depends on nothing after j)"),
        (check_attention, BrokenAttentionSpec(), "the masking rule"),
        (check_attention, BrokenAttentionSpec(backend=AheadBackend), "the masking rule"),
        (check_router, BrokenRouterSpec(), "causality (a decision depends on no later position)"),
        (check_router, BrokenRouterSpec(module=MixingRouter), "batch independence"),
        (check_router, BrokenRouterSpec(module=WholeSequenceRouter), "causality (a decision depends on no later"),
    ],
    ids=[
        "pooler-sees-next-segment",
        "pooler-mixes-rows",
        "upsampler-next-boundary",
        "upsampler-picks-without-offset",
        "stage-one-step-ahead",
        "backend-ignores-documents",
        "backend-one-step-ahead",
        "router-reads-next-position",
        "router-mixes-rows",
        "router-reads-whole-sequence",
    ],
)
def test_each_kit_rejects_a_broken_component(kit, spec, invariant: str) -> None:
    with pytest.raises(AssertionError) as err:
        kit(spec, model_examples=0)
    message = str(err.value)
    assert message.startswith(f"{kit.__name__.removeprefix('check_')} 'broken-") and invariant in message, message


def test_the_splitter_kit_rejects_forms_that_disagree_on_a_run_of_terminators() -> None:
    with pytest.raises(AssertionError, match="broken-terminators.*differs from batch"):
        check_splitter(FirstTerminatorSplitter())


def test_a_broken_component_breaks_whole_models_too() -> None:
    # The model-level half of a kit, on its own: a pooler that sees the next segment makes the
    # model see the future (or decode other than it teacher-forces), with the falsifying example.
    from aunet.testing.kits import _models

    with pytest.raises(AssertionError, match="inside a model: (causality|generation equals teacher forcing)"):
        _models("pooler 'broken-pooler'", 10, shrink=False, pooler=BrokenPoolerSpec())


def test_every_kit_catches_every_mutant_in_20_of_20_fresh_runs(tmp_path: Path) -> None:
    # As a plugin author runs a kit: outside this project's conftest (no derandomized profile),
    # hypothesis's default example counts and random seeds, no example database to replay an
    # earlier failure; shrinking off, which only makes a failing example smaller. The splitter
    # mutant's two forms disagree only on a run of terminators, which random text seldom holds.
    script = Path(__file__).with_name("mutants.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(script.parent)}
    result = subprocess.run(
        [sys.executable, str(script), "20", "--no-shrink"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    counts = json.loads(result.stdout.splitlines()[-1])
    assert counts == dict.fromkeys(counts, 20) and len(counts) == 10, counts
