"""Runs a user can trust: nothing loaded from a run executes code, a run resumes (or says why
not) in every state it can be left in, data and evaluation say what they did, and bad input of
every kind is one line, never a traceback, a hang or unbounded memory."""

from __future__ import annotations

import errno
import json
import math
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aunet.core.errors import InputError
from aunet.core.overrides import apply_overrides
from aunet.jobs.runs import checkpoint
from aunet.jobs.train.loop import train

from conftest import TEXT, run_cli, write_spec


def assert_one_line_error(result, *fragments: str) -> list[str]:
    assert result.returncode == 2, (result.returncode, result.stdout[-500:], result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("aunet: error:")]
    assert errors, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)
    return errors


def _rehash(ckpt: Path, name: str) -> None:
    """Rewrite a file's size and hash in meta.json, as a tamperer would (the hashes sit beside
    the files, so they detect corruption, not tampering)."""
    meta = json.loads((ckpt / "meta.json").read_text())
    meta["files"][name] = {"bytes": (ckpt / name).stat().st_size, "sha256": checkpoint.sha256(ckpt / name)}
    (ckpt / "meta.json").write_text(json.dumps(meta))


def losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]


@pytest.fixture
def run(spec, corpus_file: Path, tmp_path: Path) -> Path:
    """A finished 6-step run with checkpoints at steps 4 and 6."""
    out = tmp_path / "run"
    train(spec, data=corpus_file, out=out, steps=6)
    return out


# -- security ----------------------------------------------------------------------------------


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


@pytest.mark.parametrize("where", ["state.pt", "trainer.safetensors", "model.safetensors", "trainer.json"])
def test_a_planted_pickle_never_runs(run: Path, tmp_path: Path, where: str) -> None:
    marker = tmp_path / "marker"
    ckpt = checkpoint.latest(run)
    (ckpt / where).write_bytes(pickle.dumps(_Payload(marker)))
    _rehash(ckpt, where)
    for argv in (
        ["eval", "--ckpt", str(run)],
        ["generate", "--ckpt", str(run), "--max-bytes", "3"],
        ["train", "--out", str(run), "--resume", "--steps", "8"],
    ):
        result = run_cli(*argv)
        assert not marker.exists(), (where, argv)
        assert "Traceback" not in result.stderr
        if where == "model.safetensors" or (argv[0] == "train" and where != "state.pt"):
            assert result.returncode == 2, (where, argv, result.stderr)


def test_an_old_pickled_checkpoint_is_refused_for_resume_without_loading_it(run: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    ckpt = checkpoint.latest(run)
    (ckpt / "state.pt").write_bytes(pickle.dumps(_Payload(marker)))
    _rehash(ckpt, "state.pt")
    with pytest.raises(checkpoint.CheckpointError, match="pickled state.pt, which aunet no longer loads"):
        checkpoint.load_trainer(checkpoint.newest_complete(run)[0])
    assert not marker.exists()


# -- resumable in every state --------------------------------------------------------------------


def test_a_run_without_a_checkpoint_restarts_under_resume(spec, corpus_file: Path, tmp_path: Path) -> None:
    fresh = train(spec, data=corpus_file, out=tmp_path / "fresh", steps=6)
    out = tmp_path / "run"
    train(spec, data=corpus_file, out=out, steps=6)
    for ckpt in (out / "checkpoints").iterdir():  # as if killed before its first checkpoint
        shutil.rmtree(ckpt) if ckpt.is_dir() else ckpt.unlink()
    with pytest.raises(InputError, match="has no complete checkpoint: --resume restarts it"):
        train(spec, data=corpus_file, out=out, steps=6)
    notes: list[str] = []

    class Stream:
        def write(self, text: str) -> None:
            notes.append(text)

        def flush(self) -> None:
            pass

    again = train(None, data=None, out=out, resume=True, stream=Stream())
    assert any("restarting the run from step 0" in n for n in notes)
    assert again.losses == fresh.losses and losses(out) == losses(tmp_path / "fresh")


@pytest.mark.parametrize("latest", ["step-00000004\n", None, b"\xff\xfe\x00", "x" * 100_000, "step-00000099\n"])
def test_resume_takes_the_newest_complete_checkpoint_whatever_latest_says(
    spec, corpus_file: Path, tmp_path: Path, latest
) -> None:
    whole = train(spec, data=corpus_file, out=tmp_path / "whole", steps=10)
    out = tmp_path / "cut"
    train(spec, data=corpus_file, out=out, steps=10, stop_at=8)  # checkpoints 4 and 8
    pointer = out / "checkpoints" / "latest"
    if latest is None:
        pointer.unlink()  # killed after step-8 was renamed into place, before `latest` was written
    else:
        pointer.write_bytes(latest if isinstance(latest, bytes) else latest.encode())
    rest = train(None, data=None, out=out, resume=True)
    assert rest.step == 10 and losses(out) == losses(tmp_path / "whole") and rest.val_bpb == whole.val_bpb


def test_a_checkpoint_of_another_model_is_one_line(run: Path) -> None:
    spec_file = run / "spec.toml"
    spec_file.write_text(spec_file.read_text().replace("dim = 48", "dim = 64"))
    assert_one_line_error(
        run_cli("train", "--out", str(run), "--resume", "--steps", "8"),
        "was written by another model than spec.toml describes",
        "levels[1].dim: 48 -> 64",
    )


@pytest.mark.parametrize("files", [[], None, "abc", {"model.safetensors": 3}])
def test_malformed_meta_json_is_one_line(run: Path, files) -> None:
    for ckpt in (run / "checkpoints").glob("step-*"):
        meta = json.loads((ckpt / "meta.json").read_text())
        meta["files"] = files
        (ckpt / "meta.json").write_text(json.dumps(meta))
    assert_one_line_error(run_cli("train", "--out", str(run), "--resume"), "no checkpoint of", "verifies")
    assert_one_line_error(
        run_cli("eval", "--ckpt", str(checkpoint.latest_name(run) and run / "checkpoints" / "step-00000006")),
        'meta.json\'s "files" is not a table',
    )


def test_meta_json_without_a_step_is_one_line(run: Path) -> None:
    ckpt = run / "checkpoints" / "step-00000006"
    meta = json.loads((ckpt / "meta.json").read_text())
    del meta["step"]
    (ckpt / "meta.json").write_text(json.dumps(meta))
    assert_one_line_error(run_cli("eval", "--ckpt", str(ckpt)), "meta.json records no step")
    # resume passes over it to the older, intact checkpoint, and says so
    result = run_cli("train", "--out", str(run), "--resume", "--steps", "6")
    assert result.returncode == 0 and "passing over step-00000006" in result.stderr, result.stderr


def test_deleted_spec_and_run_records_are_recovered_from_the_checkpoint(
    spec, corpus_file: Path, tmp_path: Path
) -> None:
    whole = train(spec, data=corpus_file, out=tmp_path / "whole", steps=10)
    out = tmp_path / "cut"
    train(spec, data=corpus_file, out=out, steps=10, stop_at=8)
    (out / "spec.toml").unlink()
    (out / "run.json").unlink()
    result = run_cli("train", "--out", str(out), "--resume")
    assert result.returncode == 0, result.stderr
    assert "spec.toml is missing; using the spec recorded in step-00000008" in result.stderr
    assert "run.json is missing; using the data record of step-00000008" in result.stderr
    assert losses(out) == losses(tmp_path / "whole") and whole.step == 10


def test_tb_being_a_file_is_one_line(run: Path) -> None:
    shutil.rmtree(run / "tb")
    (run / "tb").write_text("not a folder")
    assert_one_line_error(
        run_cli("train", "--out", str(run), "--resume", "--steps", "8"),
        "tb is a file; TensorBoard writes a folder there",
    )


def test_a_torn_metrics_line_is_not_continued(spec, corpus_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(spec, data=corpus_file, out=out, steps=10, stop_at=8)
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 9, "loss": 1.')  # killed mid-write
    train(None, data=None, out=out, resume=True)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]  # every line parses
    assert [r["step"] for r in records if "loss" in r] == list(range(1, 11))


def test_after_a_kill_and_resume_metrics_hold_each_step_once(
    spec, corpus_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    train(spec, data=corpus_file, out=out, steps=10, stop_at=7)  # metrics up to 7, checkpoints 4 and 7
    shutil.rmtree(out / "checkpoints" / "step-00000007")  # killed after step 7: last checkpoint 4
    purges = []
    from torch.utils import tensorboard

    original = tensorboard.SummaryWriter

    def spy(*args, **kwargs):
        purges.append(kwargs.get("purge_step"))
        return original(*args, **kwargs)

    monkeypatch.setattr(tensorboard, "SummaryWriter", spy)
    train(None, data=None, out=out, resume=True)
    steps = [r["step"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert steps == list(range(1, 11)) and purges == [5]  # TensorBoard hides the old events from step 5 on


def test_extending_a_finished_run_continues_at_the_final_rate(spec, corpus_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    schedule = apply_overrides(spec, ["train.warmup=2"])
    train(schedule, data=corpus_file, out=out, steps=8)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"lr"' in line]
    final_lr = schedule.train.lr * schedule.train.min_lr_ratio
    result = run_cli("train", "--out", str(out), "--resume", "--steps", "12")
    assert result.returncode == 0, result.stderr
    assert "extending the finished 8-step run to 12 steps" in result.stderr
    after = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"lr"' in line]
    assert [r["step"] for r in after] == list(range(1, 13)) and after[:8] == records
    assert all(math.isclose(r["lr"], final_lr) for r in after[8:])
    history = json.loads((out / "run.json").read_text())["history"]
    assert history[-1]["changes"]["train.decay_steps"] == [None, 8] and history[-1]["changes"]["train.steps"] == [8, 12]


def test_changing_an_unfinished_runs_budget_is_refused(spec, corpus_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(spec, data=corpus_file, out=out, steps=10, stop_at=4)
    assert_one_line_error(
        run_cli("train", "--out", str(out), "--resume", "--steps", "12"),
        "is at step 4 of a 10-step schedule",
        "would move its cosine",
        "--stop-at",
    )


def test_a_second_process_on_the_same_run_is_refused_and_a_stale_lock_taken_over(run: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX);"
                "f.seek(0); f.truncate(); f.write('aunet process 4242 on elsewhere'); f.flush(); print('held', flush=True);"
                "time.sleep(60)"
            ),
            str(run / ".lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert_one_line_error(
            run_cli("train", "--out", str(run), "--resume", "--steps", "8"),
            "is in use: aunet process 4242 on elsewhere is training in it",
        )
    finally:
        holder.kill()
        holder.wait()
    # The kernel released the dead holder's lock: the next process takes it over.
    result = run_cli("train", "--out", str(run), "--resume", "--steps", "8")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("code", "advice"), [(errno.ENOSPC, "free space on the disk"), (errno.EROFS, "writable")])
def test_a_full_disk_or_a_read_only_folder_is_one_line(
    spec, corpus_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, advice: str
) -> None:
    out = tmp_path / "run"
    train(spec, data=corpus_file, out=out, steps=10, stop_at=4)
    before = checkpoint.latest(out)
    import safetensors.torch

    def full(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    errors = assert_one_line_error(
        run_cli("train", "--out", str(out), "--resume"), advice, "the previous checkpoints are intact"
    )
    assert len(errors) == 1
    monkeypatch.undo()
    assert checkpoint.latest(out) == before and checkpoint.verify(before)
    assert not list((out / "checkpoints").glob(".tmp-*"))


def test_a_resume_may_change_the_recipe_and_records_it(spec, corpus_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(spec, data=corpus_file, out=out, steps=10, stop_at=4)
    result = run_cli("train", "--out", str(out), "--resume", "--set", "train.lr=1e-3")
    assert result.returncode == 0, result.stderr
    assert "train.lr changes from 0.003 to 0.001 from step 5" in result.stderr
    history = json.loads((out / "run.json").read_text())["history"]
    assert len(history) == 2 and history[1]["step"] == 4 and history[1]["changes"] == {"train.lr": [0.003, 0.001]}
    assert "lr = 0.001" in (out / "spec.toml").read_text()
    refused = run_cli("train", "--out", str(out), "--resume", "--set", "levels[1].dim=64")
    assert_one_line_error(refused, "was started with another model (levels[1].dim: 48 -> 64)", "[train] values only")


def test_a_checkpoint_with_non_finite_weights_is_never_written(spec, corpus_file: Path, tmp_path: Path) -> None:
    from aunet.jobs.train.trainer import TrainingDiverged

    out = tmp_path / "run"
    wild = apply_overrides(spec, ["train.lr=1e30", "train.warmup=0", "train.checkpoint.every=1", "train.clip=none"])
    with pytest.raises(TrainingDiverged, match="not finite|became"):
        train(wild, data=corpus_file, out=out, steps=20)
    for ckpt in (out / "checkpoints").glob("step-*"):
        from safetensors.torch import load_file

        weights = load_file(str(ckpt / "model.safetensors"))
        assert all(bool(w.isfinite().all()) for w in weights.values()), ckpt


# -- honest data and evaluation --------------------------------------------------------------------


def test_resume_from_another_directory_and_by_an_absolute_path(spec, corpus_file: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    relative = os.path.relpath(corpus_file, work)
    result = run_cli(
        "train",
        "--spec",
        str(write_spec(tmp_path)),
        "--data",
        relative,
        "--out",
        "run",
        "--steps",
        "10",
        "--stop-at",
        "4",
        cwd=work,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((work / "run" / "run.json").read_text())["data"] == str(corpus_file.resolve())
    resumed = run_cli(
        "train", "--out", str(work / "run"), "--resume", "--data", str(corpus_file.resolve()), "--stop-at", "6"
    )
    assert resumed.returncode == 0, resumed.stderr


def test_data_changed_between_stop_and_resume_is_an_error_naming_the_change(
    spec, corpus_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    train(spec, data=corpus_file, out=out, steps=10, stop_at=4)
    corpus_file.write_text(TEXT[:5000])
    assert_one_line_error(
        run_cli("train", "--out", str(out), "--resume"),
        "the data changed since the run started",
        f"corpus.txt: {len(TEXT.encode()):,} -> 5,000 bytes",
    )


def test_corpus_formats_are_read_as_what_they_are(tmp_path: Path) -> None:
    import bz2
    import gzip
    import lzma

    from aunet.jobs.data.corpus import read_documents

    (tmp_path / "a.json").write_text(json.dumps([{"text": "one"}, "two"]))
    assert [d.data for d in read_documents(tmp_path / "a.json")[0]] == [b"one", b"two"]
    (tmp_path / "b.json").write_text('{"text": "x"}\n{"text": "y"}\n')  # JSON lines named .json
    assert [d.data for d in read_documents(tmp_path / "b.json")[0]] == [b"x", b"y"]
    (tmp_path / "c.txt.gz").write_bytes(gzip.compress(b"gz text"))
    (tmp_path / "d.jsonl.xz").write_bytes(lzma.compress(b'{"text": "xz record"}\n'))
    (tmp_path / "e.txt.bz2").write_bytes(bz2.compress(b"bz2 text"))
    assert [d.data for d in read_documents(tmp_path / "c.txt.gz")[0]] == [b"gz text"]
    assert [d.data for d in read_documents(tmp_path / "d.jsonl.xz")[0]] == [b"xz record"]
    folder = tmp_path / "folder"
    folder.mkdir()
    for name in ("c.txt.gz", "d.jsonl.xz", "e.txt.bz2", "a.json"):
        (folder / name).write_bytes((tmp_path / name).read_bytes())
    (folder / "notes.pdf").write_bytes(b"%PDF")
    (folder / "readme.md").write_text("skip me")
    docs, fingerprint, notices = read_documents(folder)
    assert [d.data for d in docs] == [b"one", b"two", b"gz text", b"xz record", b"bz2 text"]
    assert len(fingerprint["files"]) == 4 and len(notices) == 1
    assert "skipped 2 of other types (notes.pdf, readme.md)" in notices[0]


def test_decompression_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lzma

    from aunet.jobs.data import corpus as data

    bomb = tmp_path / "zeros.txt.xz"
    bomb.write_bytes(lzma.compress(b"\0" * (8 << 20)))  # 8 MiB of zeros in about 1 KB
    assert bomb.stat().st_size < 10_000
    monkeypatch.setattr(data, "max_corpus_bytes", lambda: 1 << 20)
    with pytest.raises(InputError, match="holds more than 0.00 GiB of text, the most aunet holds in memory"):
        data.read_documents(bomb)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"text": "' + b"[" * 0 + b'ok"}\n' + b"[" * 100_000 + b"\n", "line 2: JSON nested too deeply"),
        (b'{"text": 1' + b"0" * 5000 + b"}\n", "line 1: not readable JSON"),
        (b'{"text": "caf\xe9"}\n', "line 1: not valid UTF-8"),
        (b'{"text": "\\ud800"}\n', "line 1: the text holds a lone surrogate (\\ud800)"),
    ],
)
def test_bad_json_lines_are_one_line(tmp_path: Path, line: bytes, message: str) -> None:
    from aunet.jobs.data.corpus import read_documents

    path = tmp_path / "d.jsonl"
    path.write_bytes(line)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)").replace("\\u", r"\\u")):
        read_documents(path)


def test_eval_warns_when_the_xz_figure_means_nothing(run: Path, tmp_path: Path) -> None:
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("0123456789")
    result = run_cli("eval", "--ckpt", str(run), "--data", str(tiny))
    assert result.returncode == 0 and "xz's figure means little on 10 bytes" in result.stderr, result.stderr


def test_evaluation_shows_progress_on_a_terminal(run: Path) -> None:
    from aunet.jobs.data.corpus import load_corpus
    from aunet.jobs.data.packing import encode_documents
    from aunet.jobs.inference.evaluate import evaluate
    from aunet.jobs.runs.directory import load_run
    from aunet.jobs.train.metrics import Progress

    class Terminal:
        def __init__(self) -> None:
            self.text = ""

        def isatty(self) -> bool:
            return True

        def write(self, text: str) -> None:
            self.text += text

        def flush(self) -> None:
            pass

    loaded = load_run(run)
    docs = encode_documents(load_corpus(loaded.data["data"]).validation, loaded.encoding)
    terminal = Terminal()
    evaluate(
        loaded.model,
        loaded.encoding,
        docs,
        context=loaded.spec.model.context,
        batch_size=1,
        progress=Progress(terminal),
    )
    assert "evaluating [" in terminal.text and "kB/s" in terminal.text and terminal.text.endswith("\x1b[K")


# -- bad input that used to escape -------------------------------------------------------------


def test_generation_memory_is_bounded_by_the_context() -> None:
    import torch

    import aunet
    from aunet.core.decoding import new_state
    from aunet.jobs.inference import generate as gen

    spec = aunet.parse_spec(
        '[model]\ncontext = 32\n[[levels]]\ndim = 16\nstage = { kind = "transformer", layers = 1, '
        'head_dim = 8 }\n[[levels]]\ndim = 16\nsplitter = "whitespace"\nstage = { kind = '
        '"transformer", layers = 1, head_dim = 8 }'
    )
    torch.manual_seed(0)
    model = aunet.build_model(spec).eval()
    capacities = []
    original = gen.new_state
    gen.new_state = lambda m, b, c, **kw: capacities.append(c) or original(m, b, c, **kw)
    try:
        text = iter([*b"abc de fgh ij " * 8, 257])  # 112 bytes, then EOS
        out = gen.decode(
            model, [b"ab cd"], 9_999_999_999, choose=lambda logits: torch.tensor([next(text)]), keep_logits=True
        )
    finally:
        gen.new_state = original
    assert capacities == [32] and new_state(model, 1, 32).caches
    assert len(out.new_bytes[0]) == 112 and all(bool(torch.isfinite(x).all()) for x in out.logits[0])


def test_spec_names_never_make_a_run_directory_outside_runs() -> None:
    import aunet
    from aunet.jobs.runs.directory import default_out

    spec = aunet.parse_spec('name = "../../etc/x"')
    out = default_out(spec)
    assert out.parent == Path("runs") and ".." not in out.parts and out.name.startswith("etc-x-")


def test_out_naming_a_file_or_a_path_through_one_is_one_line(tmp_path: Path, corpus_file: Path) -> None:
    spec_file = write_spec(tmp_path)
    (tmp_path / "file").write_text("x")
    for out, message in ((tmp_path / "file", "is a file; give a folder"), (tmp_path / "file" / "run", "is a file")):
        assert_one_line_error(
            run_cli("train", "--spec", str(spec_file), "--data", str(corpus_file), "--out", str(out), "--steps", "1"),
            message,
        )


def test_unbounded_reads_are_refused(tmp_path: Path) -> None:
    assert_one_line_error(run_cli("split", "--splitters", "whitespace", "--file", "/dev/zero"), "not a regular file")
    assert_one_line_error(run_cli("spec", "check", "/dev/zero"), "not a regular file")
    big = tmp_path / "big.toml"
    big.write_bytes(b"# " + b"x" * (2 << 20))
    assert_one_line_error(run_cli("spec", "check", str(big)), "larger than 1024 KiB")


def test_split_streams_large_files_with_bounded_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tracemalloc

    from aunet.cli import split as cli

    text = ("The cat sat on the mat, 12345 times!\n" * 60_000).encode()  # 2.2 MB
    path = tmp_path / "big.txt"
    path.write_bytes(text)
    small = path.with_name("small.txt")
    small.write_bytes(text[:30_000])
    batch = json.loads(run_cli("split", "--splitters", "whitespace,word-pair", "--file", str(small), "--json").stdout)
    monkeypatch.setattr(cli, "BATCH_SPLIT_BYTES", 0)
    monkeypatch.setattr(cli, "SPLIT_CHUNK", 4096)
    streamed = json.loads(
        run_cli("split", "--splitters", "whitespace,word-pair", "--file", str(small), "--json").stdout
    )
    assert streamed == batch  # the streaming form gives the batch form's levels
    tracemalloc.start()
    result = run_cli("split", "--splitters", "whitespace,word-pair", "--file", str(path))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert result.returncode == 0 and "2,220,000 bytes" in result.stdout
    assert peak < 16 << 20, peak  # a few chunks, not 11 to 54 bytes per input byte (24 to 120 MB)


def test_an_invalid_utf8_prompt_is_echoed_safely(run: Path) -> None:
    env = {"PYTHONIOENCODING": "utf-8"}
    prompt = b"caf\xff ".decode("utf-8", "surrogateescape")
    result = subprocess.run(
        [sys.executable, "-m", "aunet", "generate", "--ckpt", str(run), "--prompt", prompt, "--max-bytes", "4"],
        capture_output=True,
        env={**os.environ, **env},
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.startswith("caf\ufffd ".encode()) and b"Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["generate", "--ckpt", "x", "--temperature", "inf"], "expected a finite number, got inf"),
        (["generate", "--ckpt", "x", "--seed", str(2**64)], "must be at most 9,223,372,036,854,775,807"),
        (["generate", "--ckpt", "x", "--max-bytes", str(2**41)], "must be at most"),
        (["train", "--minutes", "inf"], "expected a finite number, got inf"),
        (["train", "--step", "5"], "unrecognized arguments: --step 5 (--step: did you mean '--steps'?)"),
    ],
)
def test_bad_flags_are_one_line(argv: list[str], message: str) -> None:
    assert_one_line_error(run_cli(*argv), message)


def test_errors_from_set_are_blamed_on_the_set(tmp_path: Path, corpus_file: Path) -> None:
    spec_file = write_spec(tmp_path, TINY_WITH_MISTAKE)
    result = run_cli(
        "train",
        "--spec",
        str(spec_file),
        "--data",
        str(corpus_file),
        "--out",
        str(tmp_path / "r"),
        "--set",
        "train.lr=nan",
        "--set",
        "levels[0].stage.head_dim=7",
    )
    errors = assert_one_line_error(result)
    assert f"aunet: error: {spec_file}: train.steps: must be at least 1, got -5" in errors
    assert "aunet: error: --set train.lr=nan: train.lr: expected a finite number, got nan" in errors
    assert not (tmp_path / "r").exists() and "run directory" not in result.stderr
    semantic = run_cli(
        "train",
        "--spec",
        str(write_spec(tmp_path)),
        "--data",
        str(corpus_file),
        "--out",
        str(tmp_path / "r"),
        "--set",
        "levels[0].stage.head_dim=7",
    )
    assert_one_line_error(semantic, "--set levels[0].stage.head_dim=7: levels[0].stage.head_dim: 7 does not divide")


TINY_WITH_MISTAKE = (
    (Path(__file__).parent / "conftest.py")
    .read_text()
    .split('TINY = """')[1]
    .split('"""')[0]
    .replace("batch_size = 4", "batch_size = 4\nsteps = -5")
)


def test_a_spec_too_large_for_this_machine_is_one_line(tmp_path: Path, corpus_file: Path) -> None:
    big = write_spec(
        tmp_path,
        TINY_WITH_MISTAKE.replace("steps = -5", "")
        .replace("dim = 48", "dim = 1048576")
        .replace("head_dim = 16 }\n[train]", "head_dim = 1024 }\n[train]"),
    )
    assert_one_line_error(
        run_cli(
            "train",
            "--spec",
            str(big),
            "--data",
            str(corpus_file),
            "--out",
            str(tmp_path / "r"),
            "--steps",
            "1",
            "--device",
            "cpu",
        ),
        "training this spec needs at least",
        "GiB free on cpu",
    )
    assert not (tmp_path / "r").exists()


def test_checkpoint_files_share_one_mode(run: Path) -> None:
    ckpt = checkpoint.latest(run)
    modes = {(ckpt / name).stat().st_mode & 0o777 for name in (*checkpoint.FILES, "meta.json")}
    assert len(modes) == 1, modes


def test_no_run_directory_is_printed_or_made_for_a_run_that_never_starts(tmp_path: Path) -> None:
    result = run_cli(
        "train",
        "--spec",
        str(write_spec(tmp_path)),
        "--data",
        str(tmp_path / "missing.txt"),
        "--out",
        str(tmp_path / "r"),
        "--steps",
        "1",
    )
    assert_one_line_error(result, "does not exist")
    assert "run directory" not in result.stderr and not (tmp_path / "r").exists()
