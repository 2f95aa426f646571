"""Generation with per-stage KV caches: equal to teacher forcing, stage calls only at boundaries,
batched prompts of different lengths, sampling options, bad input (docs/method.md section 5)."""

from __future__ import annotations

import os
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import aunet
from aunet.core import modules
from aunet.core.model import build_model
from aunet.core.resources import spec_path
from aunet.jobs.inference.generate import decode, generate, generate_recompute, sample_next
from aunet.testing import small_specs
from aunet.testing.models import assert_matches_teacher_forcing

from conftest import MODEL_EXAMPLES

PROMPT_BYTES = st.one_of(
    st.binary(max_size=40),  # random bytes: long segments, invalid UTF-8
    st.text(alphabet="ab c.\n1", max_size=40).map(str.encode),  # short words, ends mid-segment
    st.just(b"x" * 37),  # one segment longer than 16 bytes
)


def greedy(logits: torch.Tensor) -> torch.Tensor:
    return sample_next(logits, temperature=0.0, top_k=None, top_p=None, generator=None)


@settings(max_examples=MODEL_EXAMPLES, deadline=None)
@given(
    spec=small_specs(context=256),
    prompts=st.lists(PROMPT_BYTES, min_size=1, max_size=3),
    new=st.integers(1, 24),
    by_row=st.booleans(),
)
def test_cached_decoding_equals_teacher_forcing(spec, prompts, new: int, by_row: bool) -> None:
    torch.manual_seed(0)
    model = build_model(spec).eval()
    # Rows of a step that run a level attend row by row to their own slots (as long caches do on
    # a CPU), or to a copy of those rows' slots (as these small ones do by default).
    with mock.patch.object(modules, "ROW_BY_ROW_BYTES", 0 if by_row else modules.ROW_BY_ROW_BYTES):
        assert_matches_teacher_forcing(model, prompts, new)


@pytest.mark.parametrize(
    "name", ["byte-tiny", "aunet2-tiny", "aunet3-tiny", "aunet4-tiny", "megabyte-tiny", "spacebyte-tiny"]
)
def test_shipped_specs_decode_exactly(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(aunet.load_spec(spec_path(name))).eval()
    assert_matches_teacher_forcing(model, [b"In the beginning God created", b"", b"supercalifragilistic" * 2], 40)


def test_sliding_window_cache_stays_bounded_and_exact() -> None:
    torch.manual_seed(0)
    model = build_model(
        aunet.parse_spec(
            '[model]\ncontext = 512\n[[levels]]\ndim = 16\nstage = { kind = "transformer", layers = 1, head_dim = 8, window = 8 }\n'
            '[[levels]]\ndim = 16\nsplitter = "whitespace"\nstage = { kind = "transformer", layers = 1, head_dim = 8 }'
        )
    ).eval()
    from aunet.core.decoding import new_state
    from aunet.core.model import Part

    assert new_state(model, 1, 500).caches[(0, Part.ENCODER)].capacity == 8
    assert_matches_teacher_forcing(model, [b"a long prompt that is longer than the window of eight"], 30)


def test_deep_stages_run_only_at_boundaries() -> None:
    torch.manual_seed(0)
    spec = aunet.load_spec(spec_path("aunet3-tiny"))
    model = build_model(spec).eval()
    result = decode(model, [b"The cat sat on the mat and"], 60, choose=greedy)
    new = result.new_bytes[0]
    levels = aunet.compute_levels(spec, b"The cat sat on the mat and" + new)[-len(new) :]
    # Steps run for every new byte but the last one chosen (its successor is never needed).
    stepped = levels[: len(new) - 1] if len(new) == 60 else levels
    assert result.stage_calls[0] == len(stepped)
    assert result.stage_calls[1] == int((stepped >= 1).sum())
    assert result.trunk_calls == result.stage_calls[2] == int((stepped >= 2).sum())


def test_generate_api_sampling_and_stops() -> None:
    torch.manual_seed(0)
    model = build_model(aunet.load_spec(spec_path("aunet2-tiny"))).eval()
    a = generate(model, [b"abc", b"x"], 20, temperature=1.0, top_k=10, seed=5)
    b = generate(model, [b"abc", b"x"], 20, temperature=1.0, top_k=10, seed=5)
    assert a == b and all(isinstance(x, bytes) and len(x) <= 20 for x in a)
    nucleus = generate(model, [b"abc"], 10, temperature=0.8, top_p=0.9, seed=1)
    assert len(nucleus[0]) <= 10
    greedy_bytes = generate(model, [b"abc"], 15)
    assert greedy_bytes == generate_recompute(model, [b"abc"], 15)
    stopped = generate(model, [b"abc"], 15, stop=greedy_bytes[0][:3])
    assert stopped == [greedy_bytes[0][:3]]
    streamed = []
    generate(model, [b"abc"], 15, on_bytes=lambda row, byte: streamed.append(byte))
    assert b"".join(streamed) == greedy_bytes[0]


def test_empty_and_too_long_prompts() -> None:
    torch.manual_seed(0)
    spec = aunet.parse_spec(
        '[model]\ncontext = 32\n[[levels]]\ndim = 16\nstage = { kind = "transformer", layers = 1, head_dim = 8 }\n'
        '[[levels]]\ndim = 16\nsplitter = "whitespace"\nstage = { kind = "transformer", layers = 1, head_dim = 8 }'
    )
    model = build_model(spec).eval()
    assert len(generate(model, [b""], 5)[0]) <= 5
    with pytest.warns(RuntimeWarning, match="kept its last 31 bytes, dropped 9"):
        result = decode(model, [b"y" * 40], 3, choose=greedy)
    assert result.truncated == (9,)


def test_bad_arguments() -> None:
    model = build_model(aunet.load_spec(spec_path("aunet2-tiny"))).eval()
    with pytest.raises(TypeError, match="list of bytes"):
        generate(model, b"abc", 3)
    with pytest.raises(ValueError, match="top_k must be > 0"):
        generate(model, [b"abc"], 3, top_k=0)
    with pytest.raises(ValueError, match="max_new_bytes must be >= 0"):
        generate(model, [b"abc"], -1)


def test_eos_ends_a_row() -> None:
    torch.manual_seed(0)
    model = build_model(aunet.load_spec(spec_path("aunet2-tiny"))).eval()
    eos_first = lambda logits: torch.full((logits.shape[0],), 257)
    assert decode(model, [b"abc", b"de"], 10, choose=eos_first).new_bytes == [b"", b""]


# -- the command line: several prompts, a prompts file, stop strings --------------------------------


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run trained for one step at a tiny learning rate: close to its random initialization,
    so greedy continuations vary from prompt to prompt."""
    from tests.conftest import train_small_run

    return train_small_run(tmp_path_factory.mktemp("gen"), context=64, steps=1, overrides=("train.lr=1e-6",))


def test_cli_decodes_several_prompts_as_one_batch_with_stops(run_dir, tmp_path) -> None:
    import json

    from tests.conftest import run_cli

    model = aunet.load_run(run_dir).model
    prompts = ["In the", "And God said, ", "x"]
    expected = generate(model, [p.encode() for p in prompts], 16)
    args = ["generate", "--ckpt", str(run_dir), "--max-bytes", "16", "--temperature", "0"]
    result = run_cli(*args, *[a for p in prompts for a in ("--prompt", p)], "--json")
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.returncode == 0 and [r["prompt"] for r in rows] == prompts
    assert [r["text"] for r in rows] == [e.decode("utf-8", "replace") for e in expected]
    assert [r["bytes"] for r in rows] == [len(e) for e in expected]
    assert all(r["ended"] in ("length", "eos") for r in rows)
    single = run_cli(*args, "--prompt", prompts[1])  # one prompt streams; same bytes as in the batch
    assert single.stdout == prompts[1] + expected[1].decode("utf-8", "replace") + "\n"

    stop = expected[0][2:4]  # raw bytes, given as the command line would get them
    stopped = run_cli(*args, "--prompt", prompts[0], "--prompt", prompts[2], "--stop", os.fsdecode(stop), "--json")
    first, other = (json.loads(line) for line in stopped.stdout.splitlines())
    cut = expected[0].find(stop) + len(stop)
    assert first["ended"] == "stop" and first["bytes"] == cut
    assert first["text"] == expected[0][:cut].decode("utf-8", "replace")
    if stop not in expected[2]:
        assert other["bytes"] == len(expected[2])  # the other row goes on to its own end

    lines = tmp_path / "prompts.txt"
    lines.write_text("In the\n\nAnd God said, \r\n")  # blank lines skipped, CRLF ends removed
    jsonl = tmp_path / "prompts.jsonl"
    jsonl.write_text('"In the"\n{"prompt": "And God said, "}\n{"text": "x"}\n')
    for path in (lines, jsonl):
        result = run_cli(*args, "--prompts", str(path))
        assert result.returncode == 0
        assert result.stdout.startswith("--- 1/") and "--- 2/" in result.stdout
    rows = [
        json.loads(line)
        for line in run_cli(*args, "--prompts", str(jsonl), "--json", "--batch-size", "2").stdout.splitlines()
    ]
    assert [r["index"] for r in rows] == [0, 1, 2] and [r["prompt"] for r in rows] == prompts


def test_cli_prompt_and_stop_errors(run_dir, tmp_path) -> None:
    from tests.conftest import run_cli

    bad = tmp_path / "bad.jsonl"
    bad.write_text('"ok"\n{"x": 1}\n')
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    cases = [
        (["--prompts", str(bad)], "line 2: expected a string or an object"),
        (["--prompts", str(empty)], "holds no prompts"),
        (["--prompts", str(tmp_path / "missing.txt")], "does not exist"),
        (["--stop", ""], "empty string would end every row"),
        (["--prompt", "a", "--prompts", str(empty)], "not allowed with argument"),
    ]
    for extra, message in cases:
        result = run_cli("generate", "--ckpt", str(run_dir), *extra)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, extra
