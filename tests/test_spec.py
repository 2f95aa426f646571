"""Specs: strict structuring with path-qualified errors, and the round trip."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aunet.core import Registry, SpecError
from aunet.core.convert import dump_spec
from aunet.core.convert import parse_spec as core_parse_spec
from aunet.core.spec import LevelSpec, Spec
from aunet.jobs.config import RunSpec, parse_spec
from aunet.splitters.words import FourWord, NWord, Whitespace, WordPair


def issues_of(text: str, registry: Registry) -> list[str]:
    with pytest.raises(SpecError) as err:
        parse_spec(text, registry=registry)
    return [str(issue) for issue in err.value.issues]


def test_three_mistakes_give_three_path_qualified_errors(registry: Registry) -> None:
    text = """
[[levels]]
dim = "256"
[[levels]]
splitter = { kind = "whitespce" }
[[levels]]
splitter = "word-pair"
colour = "red"
"""
    assert issues_of(text, registry) == [
        "levels[0].dim: expected int, got '256'",
        "levels[1].splitter.kind: unknown splitter 'whitespce'; known: 4-word, entropy, fixed, n-word, pretok, punct, script, script-4, script-n, script-pair, spacelike, whitespace, word-pair; "
        "did you mean 'whitespace'?",
        "levels[2].colour: unknown key; known: contraction, dim, max_segments, pooler, router, skip, splitter, stage, upsampler",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("levels = 3", ["levels: expected an array, got 3"]),
        ("[[levels]]\ndim = true", ["levels[0].dim: expected int, got true"]),
        ("[[levels]]\ndim = 0", ["levels[0].dim: must be at least 1, got 0"]),
        ("[[levels]]\ndim = 2.5", ["levels[0].dim: expected int, got 2.5"]),
        (
            "[[levels]]\n[[levels]]\nsplitter = { n = 2 }",
            [
                "levels[1].splitter.kind: missing; known splitter kinds: "
                "4-word, entropy, fixed, n-word, pretok, punct, script, script-4, script-n, script-pair, spacelike, whitespace, word-pair"
            ],
        ),
        (
            "[[levels]]\n[[levels]]\nsplitter = 7",
            ['levels[1].splitter: expected a table with a kind, e.g. { kind = "..." }, got 7'],
        ),
        ('[[levels]]\n[[levels]]\nsplitter = { kind = "n-word" }', ["levels[1].splitter.n: missing (required)"]),
        (
            '[[levels]]\n[[levels]]\nsplitter = { kind = "n-word", n = 0, m = 1 }',  # one round: both at once
            ["levels[1].splitter.m: unknown key; known: n", "levels[1].splitter.n: must be at least 1, got 0"],
        ),
        (
            '[[levels]]\n[[levels]]\nsplitter = { kind = "n-word", n = 0 }',
            ["levels[1].splitter.n: must be at least 1, got 0"],
        ),
        (
            "[[levels]]\nmax_segments = -1\ncontraction = 0.0",
            ["levels[0].max_segments: must be at least 1, got -1", "levels[0].contraction: must be > 0, got 0.0"],
        ),
        ('nme = "x"', ["nme: unknown key; known: levels, model, name, stamp, train; did you mean 'name'?"]),
    ],
)
def test_errors_name_the_path_and_what_would_be_right(text: str, expected: list[str], registry: Registry) -> None:
    assert issues_of(text, registry) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[[levels]]\ndim = 9223372036854775807", "levels[0].dim: must be at most 1,048,576"),
        ("[train]\nseed = -1", "train.seed: must be at least 0, got -1"),
        (f"[train]\nseed = {10**30}", "train.seed: must be at most 9,223,372,036,854,775,807"),
        ("[train]\nlr = nan", "train.lr: expected a finite number, got nan"),
        ("[train]\nlr = inf", "train.lr: expected a finite number, got inf"),
        ("[train]\nlr = 1e39", "train.lr: 1e+39 is too large: above 3.4e+38, the largest float32"),
        ("[model]\nsegment_margin = nan", "model.segment_margin: expected a finite number, got nan"),
        ("[train]\nbatch_size = 1e9", "train.batch_size: expected int, got 1000000000.0"),
        ("[train]\nbatch_size = 1000000000", "train.batch_size: must be at most 1,048,576"),
        (
            '[[levels]]\n[[levels]]\nsplitter = { kind = "n-word", n = 100000000000000000000 }',
            "levels[1].splitter.n: must be at most 65,536",
        ),
        (
            '[[levels]]\ndim = 8\nstage = { kind = "transformer", layers = 1, ffn_hidden = 100000000000 }',
            "levels[0].stage.ffn_hidden: must be at most 16,777,216",
        ),
        ("a = " + "[" * 100_000 + "]" * 100_000, "invalid TOML: nested too deeply for the parser"),
        ("a = " + "9" * 5000, "invalid TOML: an integer of more digits than Python converts (4,300)"),
    ],
)
def test_numbers_and_sizes_a_machine_cannot_take_are_refused_with_their_path(
    text: str, expected: str, registry: Registry
) -> None:
    import time

    started = time.perf_counter()
    issues = issues_of(text, registry)
    assert any(i.startswith(expected) for i in issues), issues
    assert time.perf_counter() - started < 30  # no divisor search up to 2^63 (it used to hang)


def test_a_huge_width_that_passes_reading_is_checked_fast(registry: Registry) -> None:
    spec = parse_spec(
        '[[levels]]\ndim = 1048573\nstage = { kind = "transformer", layers = 1, head_dim = 64 }', registry=registry
    )
    (issue,) = [str(i) for i in spec.check_model()]
    assert issue.startswith("levels[0].stage.head_dim: 64 does not divide the level's dim 1048573; pick a head_dim")


def test_too_many_levels_is_one_issue(registry: Registry) -> None:
    spec = parse_spec("[[levels]]\n" + '[[levels]]\nsplitter = "whitespace"\n' * 300, registry=registry)
    assert [str(i) for i in spec.check_splitting()] == ["levels: 301 levels; at most 33 (bytes and 32 pooling levels)"]


def test_a_type_error_does_not_hide_value_errors_of_the_same_table(registry: Registry) -> None:
    assert issues_of('[train]\nprecision = "half"\nsteps = -5', registry) == [
        "train.precision: expected one of auto, float32, bfloat16, got 'half'",
        "train.steps: must be at least 1, got -5",
    ]


def test_moved_keys_name_their_new_place(registry: Registry) -> None:
    assert issues_of("[train]\ncheckpoint_every = 10\nlog_every = 5", registry) == [
        "train.checkpoint_every: moved: this is now train.checkpoint.every",
        "train.log_every: moved: this is now train.metrics.every",
    ]


def test_invalid_toml_says_where(registry: Registry) -> None:
    (issue,) = issues_of("[[levels]\n", registry)
    assert issue.startswith("invalid TOML:") and "line 1" in issue


def test_semantic_checks_name_the_level(registry: Registry) -> None:
    spec = parse_spec(
        '[[levels]]\nsplitter = "whitespace"\n[[levels]]\n[[levels]]\nsplitter = "4-word"\n'
        '[[levels]]\nsplitter = "word-pair"',
        registry=registry,
    )
    assert [str(i) for i in spec.check_splitting()] == [
        "levels[0].splitter: level 0 is the byte level and has no splitter; put the first splitter in levels[1]",
        "levels[1].splitter: missing; every level above the bytes needs a splitter or a router, "
        'e.g. splitter = { kind = "whitespace" } or router = { kind = "dynamic" }',
        "levels[3].splitter.kind: 'word-pair' (2 per segment) cannot sit above '4-word' (4 per segment) at level 2; "
        "order the levels from fine to coarse",
    ]


def test_a_spec_without_levels_is_refused(registry: Registry) -> None:
    assert [str(i) for i in parse_spec('name = "x"', registry=registry).check_splitting()] == [
        "levels: no levels; add a [[levels]] table for the bytes and one per pooling level"
    ]


def test_none_is_spelt_out_where_the_default_is_not_none(registry: Registry) -> None:
    spec = parse_spec('[train]\nclip = "none"\nminutes = "none"\nsteps = 5', registry=registry)
    assert spec.train.clip is None and spec.train.minutes is None and spec.train.steps == 5
    assert 'clip = "none"' in dump_spec(spec, registry=registry)


def test_shorthand_kind_and_name_default(registry: Registry) -> None:
    spec = parse_spec('[[levels]]\n[[levels]]\nsplitter = "whitespace"', registry=registry, name="from-file")
    assert spec.name == "from-file" and spec.levels[1].splitter == Whitespace()


SPLITTERS = st.one_of(
    st.just(Whitespace()), st.just(WordPair()), st.just(FourWord()), st.builds(NWord, n=st.integers(1, 64))
)
OPTIONAL_POSITIVE = st.none() | st.integers(1, 1 << 20)
FLOATS = st.floats(1e-6, 1e6, allow_nan=False)


def _stages():
    from aunet.plugins.attention import MathSpec, SdpaSpec
    from aunet.plugins.transformer import TransformerSpec

    return st.none() | st.builds(
        TransformerSpec,
        layers=st.integers(1, 64),
        head_dim=st.integers(1, 256),
        window=OPTIONAL_POSITIVE,
        ffn_hidden=OPTIONAL_POSITIVE,
        rope_theta=FLOATS,
        attention=st.sampled_from([SdpaSpec(), MathSpec()]),
    )


def _upsamplers():
    from aunet.plugins.upsamplers import MultiLinearSpec, OffsetMode, RepeatSpec, SimpleSpec

    return st.none() | st.one_of(
        st.builds(MultiLinearSpec, offsets=st.integers(1, 64), mode=st.sampled_from(list(OffsetMode))),
        st.builds(RepeatSpec, norm_eps=FLOATS),
        st.just(SimpleSpec()),
    )


def _writers():
    from aunet.plugins.metric_writers import MlflowSpec, TensorBoardSpec, WandbSpec

    return st.lists(
        st.one_of(
            st.just(TensorBoardSpec()),
            st.builds(MlflowSpec, experiment=st.text(min_size=1, max_size=8).filter(str.strip)),
            st.builds(
                WandbSpec,
                project=st.text(min_size=1, max_size=8).filter(str.strip),
                entity=st.none() | st.text(max_size=8),
                tags=st.lists(st.text(max_size=5), max_size=2).map(tuple),
                system_metrics=st.booleans(),
            ),
        ),
        max_size=3,
        unique_by=lambda w: w.kind,
    ).map(tuple)


def _trains():
    from aunet.core.spec import Precision, ShapeMode
    from aunet.jobs.config import CheckpointSpec, EvalSpec, MetricsSpec, SampleSpec, TrainSpec

    return st.builds(
        TrainSpec,
        lr=FLOATS,
        steps=OPTIONAL_POSITIVE,
        minutes=st.none() | FLOATS,
        clip=st.none() | FLOATS,
        precision=st.sampled_from(list(Precision)),
        shapes=st.sampled_from(list(ShapeMode)),
        checkpoint=st.builds(CheckpointSpec, every=st.integers(1, 1000), keep=st.integers(1, 9)),
        eval=st.builds(EvalSpec, bytes=st.integers(1, 1 << 20), batch_size=OPTIONAL_POSITIVE),
        metrics=st.builds(MetricsSpec, every=st.integers(1, 100), tensorboard=st.booleans(), writers=_writers()),
        sample=st.builds(SampleSpec, prompt=st.text(max_size=10), top_k=OPTIONAL_POSITIVE),
    )


def _models():
    from aunet.core.spec import ModelSpec
    from aunet.testing.models import ngram_specs

    return st.builds(
        ModelSpec,
        context=st.integers(1, 1 << 16),
        segment_margin=FLOATS,
        init_std=st.none() | FLOATS,
        ngram=st.none() | ngram_specs(max_size=64, max_buckets=1 << 24),
    )


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    from aunet.plugins.poolers import SelectSpec

    depth = draw(st.integers(0, 4))
    levels = [LevelSpec(dim=draw(OPTIONAL_POSITIVE), stage=draw(_stages()))]
    for _ in range(depth):
        levels.append(
            LevelSpec(
                dim=draw(OPTIONAL_POSITIVE),
                splitter=draw(SPLITTERS),
                stage=draw(_stages()),
                pooler=draw(st.none() | st.just(SelectSpec())),
                upsampler=draw(_upsamplers()),
                max_segments=draw(OPTIONAL_POSITIVE),
                contraction=draw(st.none() | st.floats(0.01, 1e6, allow_nan=False)),
            )
        )
    name = draw(st.text(max_size=20))
    stamp = draw(st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=8), max_size=3))
    return RunSpec(name=name, model=draw(_models()), levels=tuple(levels), train=draw(_trains()), stamp=stamp)


@given(spec=specs())
def test_round_trip_through_toml_is_the_identity(spec: Spec) -> None:
    from aunet.core.convert import converter as spec_converter
    from aunet.core.registry import default_registry

    registry = default_registry()
    converter = spec_converter(registry)
    assert converter.structure(converter.unstructure(spec), RunSpec) == spec
    assert parse_spec(dump_spec(spec, registry=registry), registry=registry) == spec
    # A model's spec reads the same file, leaving the trainer's table to the job.
    model = core_parse_spec(dump_spec(spec, registry=registry), registry=registry, ignore=("train",))
    assert type(model) is Spec and (model.model, model.levels, model.stamp) == (spec.model, spec.levels, spec.stamp)
