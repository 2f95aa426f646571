"""The main job: data, packing, training, checkpoints, resume, evaluation, and every bad input."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import numpy as np
import pytest

from aunet.core.encoding import splitter_encoding
from aunet.core.errors import InputError
from aunet.core.overrides import apply_overrides
from aunet.core.tokens import BOS, EOS, IGNORE, PAD
from aunet.jobs.data.corpus import Document, load_corpus, read_documents, split, xz_bits_per_byte
from aunet.jobs.data.packing import Packer, Position, encode_documents, evaluation_rows
from aunet.jobs.runs import checkpoint, saving
from aunet.jobs.train.loop import TrainingDiverged, train

from conftest import TEXT, TINY, run_cli

# -- data --------------------------------------------------------------------------------------


def test_embedded_corpus_splits_by_book() -> None:
    corpus = load_corpus(None)
    assert len(corpus.train) == 72 and len(corpus.validation) == 8
    assert [d.name for d in corpus.validation][:2] == ["II Samuel", "Proverbs"]
    assert corpus.train[0].data.startswith(b"Genesis 1\nIn the beginning")


def test_small_corpora_split_inside_documents() -> None:
    corpus = split([Document("a", b"line one\n" * 20)], "x")
    assert corpus.train[0].data + corpus.validation[0].data == b"line one\n" * 20
    assert corpus.validation[0].data.startswith(b"line one") and len(corpus.validation[0].data) <= 20


def test_user_corpus_formats(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "b.txt").write_text("second")
    (folder / "a.txt").write_text("first")
    assert [d.data for d in read_documents(folder)[0]] == [b"first", b"second"]
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"text": "one"}\n\n{"text": "two", "id": 3}\n')
    assert [d.data for d in read_documents(jsonl)[0]] == [b"one", b"two"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.txt", None, "does not exist"),
        ("empty.txt", "", "holds no text"),
        ("folder", "<dir>", "holds no .txt, .jsonl, .json or .parquet files"),
        ("x.jsonl", '{"text": "ok"}\n{bad\n', "line 2: not valid JSON"),
        ("y.jsonl", '{"body": "ok"}\n', 'line 1: expected an object with a "text"'),
    ],
)
def test_bad_corpora_say_what_is_wrong(tmp_path: Path, name: str, content: str | None, message: str) -> None:
    path = tmp_path / name
    if content == "<dir>":
        path.mkdir()
    elif content is not None:
        path.write_text(content)
    with pytest.raises(InputError, match=message):
        read_documents(path)


def test_packing_is_deterministic_and_never_predicts_a_document_start(spec) -> None:
    docs = encode_documents(
        [Document(str(i), f"document {i} text ".encode() * (i + 1)) for i in range(6)], splitter_encoding(spec)
    )
    packer = Packer(docs, 64, seed=3)
    first, after = packer.batch(Position(), 4)
    again, _ = Packer(docs, 64, seed=3).batch(Position(), 4)
    assert np.array_equal(first.tokens, again.tokens) and np.array_equal(first.levels, again.levels)
    assert not np.any(first.targets == BOS)
    assert np.all(first.targets[first.tokens == EOS] == IGNORE)
    assert np.array_equal(
        first.targets[:, :-1][first.targets[:, :-1] != IGNORE], first.tokens[:, 1:][first.targets[:, :-1] != IGNORE]
    )
    assert after == Position(0, 4)
    later, _ = packer.batch(Position(0, packer.rows_per_epoch), 1)  # rolls into epoch 1
    assert later.tokens.shape == (1, 64)


def test_a_corpus_smaller_than_one_row_is_refused(spec) -> None:
    docs = encode_documents([Document("a", b"tiny")], splitter_encoding(spec))
    with pytest.raises(InputError, match="fewer than one row of model.context"):
        Packer(docs, 64, seed=0)


def test_evaluation_predicts_every_byte_and_eos_once(spec) -> None:
    docs = encode_documents([Document("a", b"x" * 150), Document("b", b"y" * 10)], splitter_encoding(spec))
    rows = list(evaluation_rows(docs, 64))
    targets = np.concatenate([r.targets[0] for r in rows])
    predicted = targets[targets != IGNORE]
    assert len(predicted) == 150 + 1 + 10 + 1
    assert (predicted == EOS).sum() == 2 and not np.any(predicted == BOS)
    assert all(r.tokens[0, 0] == BOS or r.tokens[0, 0] != PAD for r in rows)


def test_xz_baseline() -> None:
    assert 0 < xz_bits_per_byte(TEXT.encode()) < 1  # highly repetitive
    assert xz_bits_per_byte(os.urandom(4096)) > 7.9


# -- training ----------------------------------------------------------------------------------


def test_train_writes_metrics_tensorboard_checkpoints_and_a_stamped_spec(
    spec, corpus_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    summary = train(spec, data=corpus_file, out=out, steps=9)
    assert summary.step == 9 and not summary.interrupted and len(summary.losses) == 9
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 10))
    for key in ("loss", "bpb", "lr", "bytes_per_s", "grad_norm", "bytes_per_segment", "dropped"):
        assert key in steps[0], key
    assert any("val_bpb" in r for r in records) and records[-1].get("final") and "xz_bpb" in records[-1]
    assert list((out / "tb").glob("events.out.tfevents.*"))
    kept = sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.startswith("step-"))
    assert kept == ["step-00000008", "step-00000009"]  # keep = 2
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-00000009"
    written = (out / "spec.toml").read_text()
    assert "[stamp]" in written and 'aunet = "' in written and "plugin builtin-splitters" in written
    assert summary.losses[-1] < summary.losses[0]
    assert summary.val_bpb is not None and summary.xz_bpb is not None


def test_resume_is_bit_identical(spec, corpus_file: Path, tmp_path: Path) -> None:
    whole = train(spec, data=corpus_file, out=tmp_path / "a", steps=10)
    first = train(spec, data=corpus_file, out=tmp_path / "b", steps=10, stop_at=5)
    assert first.interrupted and first.step == 5
    rest = train(None, data=None, out=tmp_path / "b", resume=True)
    assert first.losses + rest.losses == whole.losses
    assert rest.val_bpb == whole.val_bpb


def test_an_existing_run_is_not_overwritten(spec, corpus_file: Path, tmp_path: Path) -> None:
    train(spec, data=corpus_file, out=tmp_path / "r", steps=2)
    with pytest.raises(InputError, match="already holds a run; add --resume"):
        train(spec, data=corpus_file, out=tmp_path / "r", steps=2)
    with pytest.raises(InputError, match="holds no run to resume"):
        train(None, data=None, out=tmp_path / "nothing", resume=True)


def test_a_diverging_run_stops_and_keeps_the_last_sane_checkpoint(spec, corpus_file: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    # lr 1e30 leaves finite weights of 1e28 after one step, which predict nothing: never saved.
    wild = apply_overrides(spec, ["train.lr=1e30", "train.warmup=0", "train.checkpoint.every=1"])
    with pytest.raises(
        TrainingDiverged,
        match="after step 1 some weight tensors are not finite or exceed 1e\\+04 "
        "in magnitude .* no checkpoint was written yet: start the run again",
    ):
        train(wild, data=corpus_file, out=tmp_path / "wild", steps=20)
    assert checkpoint.latest(tmp_path / "wild") is None
    # A sane run that diverges later keeps its last sane checkpoint, and says to resume from it.
    sane = apply_overrides(spec, ["train.checkpoint.every=1"])
    train(sane, data=corpus_file, out=tmp_path / "r", steps=20, stop_at=2)
    with pytest.raises(TrainingDiverged) as err:
        train(None, data=None, out=tmp_path / "r", resume=True, overrides=["train.lr=1e30", "train.warmup=0"])
    message = str(err.value)
    good = checkpoint.latest(tmp_path / "r")
    assert good.name == "step-00000002" and f"the last good checkpoint is {good.name}: resume from it" in message
    checkpoint.verify(good)
    assert max(float(w.abs().max()) for w in load_file(str(good / "model.safetensors")).values()) < 1e4


def test_a_crash_while_saving_leaves_the_previous_checkpoint(
    spec, corpus_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train(spec, data=corpus_file, out=tmp_path / "r", steps=4)
    before = checkpoint.latest(tmp_path / "r")

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(checkpoint.CheckpointError, match="disk full; the previous checkpoints are intact"):
        saving.save(tmp_path / "r", 5, {}, {}, {}, keep=2)
    monkeypatch.undo()
    assert checkpoint.latest(tmp_path / "r") == before
    checkpoint.verify(before)


def test_overrides_name_their_path(spec) -> None:
    from aunet.core.errors import SpecError

    changed = apply_overrides(spec, ["train.lr=0.01", "levels[1].stage.layers=2", "name=renamed"])
    assert changed.train.lr == 0.01 and changed.levels[1].stage.layers == 2 and changed.name == "renamed"
    with pytest.raises(SpecError, match=r"train.lrr: unknown key.*did you mean 'lr'"):
        apply_overrides(spec, ["train.lrr=1"])
    with pytest.raises(
        SpecError, match=r"--set levels\[7\].dim=3: levels\[7\].dim: index 7 is out of range \(2 entries\)"
    ):
        apply_overrides(spec, ["levels[7].dim=3"])
    with pytest.raises(SpecError, match="is not key=value"):
        apply_overrides(spec, ["train.lr"])


# -- the command line ----------------------------------------------------------------------------


def _write_spec(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def test_cli_train_then_eval(tmp_path: Path, corpus_file: Path) -> None:
    spec_file = _write_spec(tmp_path)
    out = tmp_path / "run"
    result = run_cli(
        "train",
        "--spec",
        str(spec_file),
        "--data",
        str(corpus_file),
        "--out",
        str(out),
        "--steps",
        "3",
        "--set",
        "train.sample.bytes=20",
    )
    assert result.returncode == 0, result.stderr
    assert "validation:" in result.stdout and "(the whole validation split)" in result.stdout
    assert "xz -9e:" in result.stdout
    # The closing figures: the last loss, speed, model FLOPs utilisation and peak memory.
    training = next(line for line in result.stdout.splitlines() if line.startswith("training:"))
    for part in (
        "last step's loss",
        "3 steps in",
        "kB/s",
        "model FLOP/s",
        "% of this device's measured matmul peak",
        "peak resident memory",
    ):
        assert part in training, training
    # The sample shows its prompt, then what the model wrote.
    assert re.search(
        r"sample \(the prompt 'And God said,', then \d+ generated bytes\):\nAnd God said,", result.stdout
    ), result.stdout
    assert re.search(r"trained 3 steps in [\d.]+ m?s; evaluating on the whole validation split", result.stderr)
    evaluated = run_cli("eval", "--ckpt", str(out), "--json")  # the run's own data, its validation split
    assert evaluated.returncode == 0, evaluated.stderr
    figures = json.loads(evaluated.stdout)
    for key in ("bpb", "bytes", "xz_bpb", "bytes_per_segment"):
        assert key in figures
    assert figures["bytes"] > 0 and len(figures["bytes_per_segment"]) == 1 and figures["split"] == "validation"
    final = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][-1]
    assert abs(figures["bpb"] - final["val_bpb"]) < 1e-5 and figures["bytes"] == final["val_bytes"]  # other batch size
    explicit = json.loads(
        run_cli("eval", "--ckpt", str(out), "--data", str(corpus_file), "--split", "validation", "--json").stdout
    )
    assert explicit["bytes"] == figures["bytes"] and abs(explicit["bpb"] - figures["bpb"]) < 1e-9
    whole = json.loads(run_cli("eval", "--ckpt", str(out), "--data", str(corpus_file), "--json").stdout)
    assert whole["split"] == "all" and whole["bytes"] == len(TEXT.encode())  # a file given is evaluated whole


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--data", "/nonexistent/corpus.txt"], "--data: '/nonexistent/corpus.txt' does not exist"),
        (["--set", "model.context=100000"], "fewer than one row of model.context"),
        (["--set", "levels[0].stage.head_dim=7"], "levels[0].stage.head_dim: 7 does not divide the level's dim 32"),
        (["--steps", "0"], "must be at least 1"),
    ],
)
def test_cli_train_bad_input(tmp_path: Path, corpus_file: Path, args: list[str], fragment: str) -> None:
    spec_file = _write_spec(tmp_path)
    argv = ["train", "--spec", str(spec_file), "--data", str(corpus_file), "--out", str(tmp_path / "r"), *args]
    if "--steps" not in args:
        argv += ["--steps", "2"]
    result = run_cli(*argv)
    assert result.returncode == 2, result.stderr
    assert fragment in result.stderr and "Traceback" not in result.stderr


def test_cli_refuses_an_existing_run_and_empty_data(tmp_path: Path, corpus_file: Path) -> None:
    spec_file = _write_spec(tmp_path)
    out = tmp_path / "run"
    assert (
        run_cli(
            "train", "--spec", str(spec_file), "--data", str(corpus_file), "--out", str(out), "--steps", "1"
        ).returncode
        == 0
    )
    again = run_cli("train", "--spec", str(spec_file), "--data", str(corpus_file), "--out", str(out), "--steps", "1")
    assert again.returncode == 2 and "already holds a run; add --resume" in again.stderr
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    result = run_cli(
        "train", "--spec", str(spec_file), "--data", str(empty), "--out", str(tmp_path / "e"), "--steps", "1"
    )
    assert result.returncode == 2 and "holds no text" in result.stderr


def test_cli_reports_truncated_and_corrupt_checkpoints(tmp_path: Path, corpus_file: Path) -> None:
    spec_file = _write_spec(tmp_path)
    out = tmp_path / "run"
    run_cli("train", "--spec", str(spec_file), "--data", str(corpus_file), "--out", str(out), "--steps", "2")
    weights = checkpoint.latest(out) / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    result = run_cli("eval", "--ckpt", str(out), "--data", str(corpus_file))
    assert result.returncode == 2 and "truncated or corrupt: model.safetensors has" in result.stderr
    weights.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    result = run_cli("eval", "--ckpt", str(out), "--data", str(corpus_file))
    assert result.returncode == 2 and "does not match its SHA-256" in result.stderr
    resumed = run_cli("train", "--out", str(out), "--resume")
    assert (
        resumed.returncode == 2 and "does not match its SHA-256" in resumed.stderr and "no checkpoint" in resumed.stderr
    )
    assert run_cli("eval", "--ckpt", str(tmp_path / "nope")).returncode == 2


@pytest.mark.slow
def test_ctrl_c_saves_and_resume_matches_an_uninterrupted_run(spec, tmp_path: Path, corpus_file: Path) -> None:
    import os
    import threading

    from aunet.cli.train import _stop_code

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers live in the main thread, and this test does not run there")
    quiet = apply_overrides(spec, ["train.checkpoint.every=1000", "train.eval.every=1000"])
    train(quiet, data=corpus_file, out=tmp_path / "whole", steps=40)

    def ctrl_c_at_step_5(step: int, loss: float) -> None:
        if step == 5:  # a real SIGINT, delivered to this process mid-run
            os.kill(os.getpid(), signal.SIGINT)

    out = tmp_path / "cut"
    summary = train(quiet, data=corpus_file, out=out, steps=40, on_step=ctrl_c_at_step_5)
    assert summary.interrupted and summary.signal == signal.SIGINT and summary.step == 5
    assert _stop_code(summary, None) == 130  # `aunet train` exits with it, saying how to continue
    saved = checkpoint.latest(out)
    assert saved is not None and saved.name == "step-00000005"
    resumed = run_cli("train", "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr

    def losses(run: Path) -> list[float]:
        return [
            json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in line
        ]

    assert losses(out) == losses(tmp_path / "whole")


def test_cli_generate_streams_text_and_refuses_a_mismatched_checkpoint(tmp_path: Path, corpus_file: Path) -> None:
    spec_file = _write_spec(tmp_path)
    out = tmp_path / "run"
    assert (
        run_cli(
            "train", "--spec", str(spec_file), "--data", str(corpus_file), "--out", str(out), "--steps", "2"
        ).returncode
        == 0
    )
    result = run_cli("generate", "--ckpt", str(out), "--prompt", "In the", "--max-bytes", "20", "--seed", "1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("In the") and len(result.stdout.encode()) <= len("In the") + 20 * 3 + 1
    long_prompt = run_cli("generate", "--ckpt", str(out), "--prompt", "x" * 100, "--max-bytes", "3")
    assert (
        long_prompt.returncode == 0 and "aunet: note: prompt 0 is longer than the model's context" in long_prompt.stderr
    )
    # A checkpoint whose recorded spec no longer matches its weights is refused with a clear line.
    meta_path = checkpoint.latest(out) / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["spec"] = meta["spec"].replace("dim = 48", "dim = 64")
    meta_path.write_text(json.dumps(meta))
    mismatched = run_cli("generate", "--ckpt", str(out), "--prompt", "In")
    assert mismatched.returncode == 2 and "does not match its spec" in mismatched.stderr, mismatched.stderr
    assert "Traceback" not in mismatched.stderr
    bad = run_cli("generate", "--ckpt", str(out), "--prompt", "In", "--top-p", "1.5")
    assert bad.returncode == 2 and "--top-p must be at most 1" in bad.stderr


def test_cli_eval_suite_udhr_reports_bits_per_byte_per_language(tmp_path: Path, corpus_file: Path) -> None:
    # The suite's logic on three texts (all 525 take minutes: `python -m benchmarks udhr-eval`).
    spec_file = _write_spec(tmp_path)
    out = tmp_path / "run"
    assert (
        run_cli(
            "train", "--spec", str(spec_file), "--data", str(corpus_file), "--out", str(out), "--steps", "2"
        ).returncode
        == 0
    )
    result = run_cli(
        "eval", "--ckpt", str(out), "--suite", "udhr", "--only", "eng,cmn_hans,th", "--json", "--batch-size", "32"
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["suite"] == "udhr" and [x["file"] for x in report["languages"]] == [
        "eng.txt",
        "cmn_hans.txt",
        "tha.txt",
    ]
    chinese = report["languages"][1]
    assert chinese["bpb"] > 0 and chinese["bytes"] > 5000 and chinese["xz_bpb"] > 0
    assert len(chinese["bytes_per_segment"]) == 1
    both = run_cli("eval", "--ckpt", str(out), "--suite", "udhr", "--data", str(corpus_file))
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
    unknown = run_cli("eval", "--ckpt", str(out), "--suite", "udhr", "--only", "english")
    assert unknown.returncode == 2 and "no udhr text is named 'english'" in unknown.stderr
