"""The work a command does, counted: a resume hashes each file of the checkpoint it resumes once,
and a spec is resolved (defaults filled, contractions measured) at most once per command."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from aunet.cli.main import main
from aunet.core import checkpoints as core_checkpoints
from aunet.core import spec as spec_module
from aunet.jobs.runs import checkpoint
from tests.conftest import write_spec


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> dict[str, Counter]:
    """Counters of SHA-256 passes per file and of spec resolutions, for the code under test."""
    counts: dict[str, Counter] = {"hashed": Counter(), "resolved": Counter()}
    hash_file, resolve = core_checkpoints.sha256, spec_module._resolve

    def counting_hash(path: Path) -> str:
        counts["hashed"][Path(path).resolve()] += 1
        return hash_file(path)

    def counting_resolve(*args, **kwargs):
        counts["resolved"]["resolve"] += 1
        return resolve(*args, **kwargs)

    monkeypatch.setattr(core_checkpoints, "sha256", counting_hash)
    monkeypatch.setattr(spec_module, "_resolve", counting_resolve)
    return counts


def test_a_new_run_resolves_its_spec_once(tmp_path: Path, corpus_file: Path, counted, capsys) -> None:
    spec = write_spec(tmp_path)
    common = ["--data", str(corpus_file), "--device", "cpu", "--set", "train.sample.bytes=0"]
    assert main(["train", "--spec", str(spec), "--out", str(tmp_path / "run"), "--steps", "2", *common]) == 0
    assert counted["resolved"]["resolve"] == 1  # with the training data's contraction, by the trainer


def test_a_resume_hashes_its_checkpoint_once_and_resolves_nothing(
    tmp_path: Path, corpus_file: Path, counted, capsys
) -> None:
    spec = write_spec(tmp_path)
    out = tmp_path / "run"
    common = ["--data", str(corpus_file), "--device", "cpu", "--set", "train.sample.bytes=0"]
    assert main(["train", "--spec", str(spec), "--out", str(out), "--steps", "4", *common]) == 0
    resumed = checkpoint.latest(out)
    files = sorted(p.resolve() for p in resumed.iterdir() if p.name != "meta.json")
    counted["hashed"].clear()
    counted["resolved"].clear()
    assert main(["train", "--out", str(out), "--resume", "--steps", "6", "--set", "train.lr=1e-3"]) == 0
    assert "resuming" in capsys.readouterr().err
    assert files and {f: counted["hashed"][f] for f in files} == dict.fromkeys(files, 1)
    assert counted["resolved"]["resolve"] == 0  # the run's spec.toml is resolved already
    # Each compare turn is such a resume: its counts are these.
