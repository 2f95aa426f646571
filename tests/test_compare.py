"""The BPE baseline, ``aunet compare`` and ``aunet plan``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import aunet
from aunet.cli.main import main
from aunet.core.accounting import account

from conftest import BYTE_SPEC, documents_corpus

tokenizers = pytest.importorskip("tokenizers", reason="the BPE baseline needs Hugging Face tokenizers (aunet[bpe])")

from aunet.jobs.data.bpe import BpeTokenizer, pieces, with_bytes_per_token

TEXT = (
    "In the beginning God created the heavens and the earth. The earth was formless and empty. "
    "Darkness was on the surface of the deep and God's Spirit was hovering over the surface of the waters. "
)


@pytest.fixture(scope="module")
def tokenizer() -> BpeTokenizer:
    return BpeTokenizer.train([TEXT.encode() * 20, "Ünïcödé and 中文 text, 12345 digits.\n".encode()], 400)


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=200) | st.text(max_size=80).map(str.encode))
def test_bpe_round_trips_any_bytes_without_merging_across_pieces(tokenizer: BpeTokenizer, data: bytes) -> None:
    ids = tokenizer.encode(data)
    assert tokenizer.decode(ids.tolist()) == data
    assert all(0 <= i < tokenizer.vocab_size and i not in (256, 257, 258) for i in ids.tolist())
    # Every token lies inside one pre-tokenizer piece.
    edges, at = {0}, 0
    for piece in pieces(data):
        at += len(piece)
        edges.add(at)
    at = 0
    for i in ids.tolist():
        start, at = at, at + len(tokenizer.token_bytes[i])
        assert not any(start < e < at for e in edges), (data, i)


def test_bpe_tokenizer_is_json_and_says_what_is_wrong(tokenizer: BpeTokenizer, tmp_path: Path) -> None:
    again = BpeTokenizer.from_json(tokenizer.to_json())
    assert again.encode(TEXT.encode()).tolist() == tokenizer.encode(TEXT.encode()).tolist()
    assert json.loads(tokenizer.to_json())["format"] == "aunet-bpe/1"
    with pytest.raises(aunet.core.InputError, match="not a readable aunet BPE tokenizer"):
        BpeTokenizer.from_json('{"format": "pickle"}')
    with pytest.raises(aunet.core.InputError, match="missing"):
        BpeTokenizer.load(tmp_path / "nothing.json")
    assert tokenizer.lengths[256:259].tolist() == [0, 0, 0] and tokenizer.lengths[:256].tolist() == [1] * 256


BPE_SPEC = """
name = "bpe-small"
[model]
context = 64
tokenizer = { kind = "bpe", vocab_size = 512 }
[[levels]]
dim = 32
stage = { kind = "transformer", layers = 1, head_dim = 16 }
[train]
batch_size = 2
"""


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    return documents_corpus(tmp_path / "corpus.jsonl")


def test_a_bpe_run_trains_evaluates_and_generates_on_the_byte_models_bytes(
    tmp_path: Path, corpus: Path, capsys
) -> None:
    spec = tmp_path / "bpe.toml"
    spec.write_text(BPE_SPEC)
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--spec",
                str(spec),
                "--data",
                str(corpus),
                "--out",
                str(out),
                "--steps",
                "3",
                "--device",
                "cpu",
                "--set",
                "train.sample.bytes=0",
            ]
        )
        == 0
    )
    assert (out / "tokenizer.json").is_file()
    resolved = aunet.load_spec(str(out / "spec.toml"))
    assert resolved.model.tokenizer.bytes_per_token > 1.5  # measured on the training split
    import math

    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert logged[-1]["bpb"] == pytest.approx(
        logged[-1]["loss"] / math.log(2) / resolved.model.tokenizer.bytes_per_token
    )
    capsys.readouterr()
    assert main(["eval", "--ckpt", str(out), "--json", "--device", "cpu"]) == 0
    bpe = json.loads(capsys.readouterr().out)
    byte_spec = tmp_path / "byte.toml"
    byte_spec.write_text(BYTE_SPEC)
    assert (
        main(
            [
                "train",
                "--spec",
                str(byte_spec),
                "--data",
                str(corpus),
                "--out",
                str(tmp_path / "bytes"),
                "--steps",
                "2",
                "--device",
                "cpu",
                "--set",
                "train.sample.bytes=0",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["eval", "--ckpt", str(tmp_path / "bytes"), "--json", "--device", "cpu"]) == 0
    byte = json.loads(capsys.readouterr().out)
    assert bpe["bytes"] == byte["bytes"] > 0  # the same validation bytes for both
    assert 0 < bpe["bpb"] < 20
    assert (
        main(
            [
                "generate",
                "--ckpt",
                str(out),
                "--prompt",
                "In the",
                "--max-bytes",
                "12",
                "--temperature",
                "0.8",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert text.startswith("In the") and len(text.encode()) <= len("In the") + 12 + 4
    run = aunet.load_run(out)
    assert run.encoding.name == "bpe" and run.encoding.unit == "tokens" and run.model.vocab_size == 512
    assert run.encoding.bytes_per_position == resolved.model.tokenizer.bytes_per_token
    # The harness scores a BPE run through its encoding: the continuation's own tokens, as a
    # forward over BOS + context tokens + continuation tokens gives them.
    from aunet.core.tokens import BOS
    from aunet.integrations.lm_eval.adapter import score_continuations

    context, continuation = b"In the beginning God", b" created the heaven"
    (scored,) = score_continuations(run.model, [(context, continuation)], limit=63, encoding=run.encoding)
    head, tail = run.encoding.tokenizer.encode(context), run.encoding.tokenizer.encode(continuation)
    ids = torch.tensor([[BOS, *head.tolist(), *tail.tolist()]])
    with torch.no_grad():
        logits = run.model(ids[:, :-1], torch.zeros_like(ids[:, :-1], dtype=torch.uint8)).logits
    logprobs = logits.double().log_softmax(-1)[0, -len(tail) :].gather(-1, ids[0, -len(tail) :, None])
    assert scored.logprob == pytest.approx(float(logprobs.sum()), rel=1e-5) and scored.dropped == 0
    with pytest.raises(aunet.core.errors.InputError, match="reads through the tokenizer its run trained"):
        aunet.generate(run.model, [b"In the"], 4)  # the model alone: its spec cannot say how it reads
    capsys.readouterr()
    assert main(["export", "--ckpt", str(out), "--out", str(tmp_path / "hf")]) == 2  # a byte tokenizer only
    refused = capsys.readouterr().err
    import importlib.util

    if importlib.util.find_spec("transformers") is not None:
        assert "is the BPE baseline" in refused and not (tmp_path / "hf").exists()


def test_bpe_flops_per_byte_divide_per_token_figures_by_bytes_per_token() -> None:
    spec = aunet.load_spec("bpe-tiny")
    one, three = account(with_bytes_per_token(spec, 1.0)), account(with_bytes_per_token(spec, 3.0))
    assert three.flops_per_byte == pytest.approx(one.flops_per_byte / 3)
    assert three.contraction[0] == 3.0 and three.tokens and not account(aunet.load_spec("byte-tiny")).tokens


def test_spec_show_of_a_bpe_spec_measures_bytes_per_token_and_says_so(capsys) -> None:
    assert main(["spec", "show", "bpe-tiny", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["context_unit"] == "tokens" and shown["contraction_measured"] is True
    assert 2.5 < shown["contraction"][0] < 5


def test_compare_writes_rows_markdown_and_plots(tmp_path: Path, corpus: Path, capsys) -> None:
    pytest.importorskip("matplotlib", reason="the plots need matplotlib (aunet[plot])")
    specs = []
    for text, name in ((BPE_SPEC, "bpe.toml"), (BYTE_SPEC, "byte.toml")):
        (tmp_path / name).write_text(text)
        specs.append(str(tmp_path / name))
    out = tmp_path / "cmp"
    assert (
        main(
            [
                "compare",
                *specs,
                "--steps",
                "4",
                "--turn-steps",
                "2",
                "--data",
                str(corpus),
                "--out",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    report = json.loads((out / "compare.json").read_text())
    rows = {r["spec"]: r for r in report["rows"]}
    assert set(rows) == {"bpe-small", "byte-small"}
    for r in rows.values():
        assert r["steps"] == 4 and r["turns"] == 2 and r["val_bytes"] == rows["byte-small"]["val_bytes"] > 0
        assert r["training_flops"] == pytest.approx(r["flops_per_byte"] * r["bytes_seen"])
        assert r["bytes_seen"] > 0 and r["wall_time_s"] > 0
    assert rows["byte-small"]["bytes_seen"] == 4 * 2 * 128
    assert [len(report["curves"][n]) for n in rows] == [2, 2]  # after turn 1, and the finished run
    for name in ("bpb_vs_flops.png", "bpb_vs_time.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| bpe-small |" in (out / "compare.md").read_text()
    assert main(["compare", *specs, "--steps", "1", "--out", str(out)]) == 2  # not an empty folder
    assert "is not empty" in capsys.readouterr().err


def test_compare_with_a_flops_budget_gives_each_spec_its_steps(tmp_path: Path, corpus: Path) -> None:
    from aunet.jobs.experiments.compare import bytes_per_step

    (tmp_path / "byte.toml").write_text(BYTE_SPEC)
    spec = aunet.load_spec(str(tmp_path / "byte.toml"))
    from aunet.core.spec import resolve_spec

    per_step = account(resolve_spec(spec)).flops_per_byte * bytes_per_step(spec)
    out = tmp_path / "cmp"
    assert (
        main(
            [
                "compare",
                str(tmp_path / "byte.toml"),
                "--flops",
                str(3.5 * per_step),
                "--data",
                str(corpus),
                "--out",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert json.loads((out / "compare.json").read_text())["rows"][0]["steps"] == 3


@pytest.mark.parametrize(("flops", "batch", "lr"), [(1.1e19, 8.5e5, 2.94e-3), (1.1e22, 7.9e6, 8.7e-4)])
def test_plan_matches_the_papers_table(flops: float, batch: float, lr: float, capsys) -> None:
    assert main(["plan", "--flops", str(flops), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["batch_bytes"] == pytest.approx(batch, rel=0.02)
    assert plan["lr"] == pytest.approx(lr, rel=0.02)
    assert plan["steps"] == round(flops / plan["flops_per_byte"] / (plan["rows_per_step"] * plan["context"]))
    assert plan["rows_per_step"] == round(plan["batch"] / plan["context"]) and plan["note"] is None
    assert [r["spec"] for r in plan["ladder"]] == ["paper/aunet2-1b", "paper/aunet3-1b", "paper/aunet4-1b"]


def test_plan_rounds_the_batch_to_rows_and_says_when_it_extrapolates(capsys) -> None:
    assert main(["plan", "--flops", "1e12"]) == 0
    text = capsys.readouterr().out
    assert "1 step of 1 row of 8,192 bytes (the batch in whole rows: 8,192 bytes)" in text
    assert "note: 1e+12 FLOPs is 7.0 orders of magnitude below the paper's smallest runs" in text


def test_plan_for_bpe_uses_its_laws(capsys) -> None:
    assert main(["plan", "--flops", "1e20", "--arch", "bpe", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["batch"] == pytest.approx(29.9 * 1e20**0.231) and plan["lr"] == pytest.approx(19.3 * 1e20**-0.177)
    assert plan["batch_bytes"] == pytest.approx(plan["batch"] * 4.56) and plan["unit"] == "tokens"
    with pytest.raises(SystemExit) as exit_:
        main(["plan", "--flops", "-1"])
    assert exit_.value.code == 2


def test_packed_rows_attend_less_than_one_long_document() -> None:
    import numpy as np

    from aunet.core.accounting import attended_keys, packed_share

    assert attended_keys(np.array([2048]), 1024, None) == (1024 + 1) / 2
    assert attended_keys(np.array([2048]), 1024, 256) == pytest.approx((256 * 257 / 2 + 768 * 256) / 1024)
    assert attended_keys(np.array([4, 4]), 8, None) == 2.5  # two documents of 4 in one row of 8
    assert packed_share([100_000], 1.0, 1024, None, bos=True) == pytest.approx(1.0, abs=1e-3)
    short = packed_share([100] * 500, 1.0, 1024, None, bos=True)
    assert short == pytest.approx(
        attended_keys(np.array([102] * 500), 1024, None) / attended_keys(np.array([51_000]), 1024, None)
    )
    assert short < 0.15
    spec = aunet.load_spec("aunet2-tiny")
    long, packed = account(spec, documents=[100_000] * 20), account(spec, documents=[300] * 2000)
    assert packed.flops_per_byte_packed < long.flops_per_byte_packed <= long.flops_per_byte * 1.0001
    assert account(spec).flops_per_byte_packed is None
