"""``aunet sweep`` end to end at toy budgets: every spec at every size and budget, one comparison
per budget, the compute-optimal points, the laws and the crossovers written, a resumed sweep
reading back what is done, and a folder of another sweep refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aunet.cli.main import main

from conftest import BYTE_SPEC, documents_corpus

#: The byte model with a level of words above it.
AUNET_SPEC = (
    BYTE_SPEC.replace("byte-small", "aunet-small")
    + """
[[levels]]
dim = 48
splitter = { kind = "whitespace" }
stage = { kind = "transformer", layers = 1, head_dim = 16 }
"""
)


def test_a_toy_sweep_runs_end_to_end_and_resumes(tmp_path: Path, capsys) -> None:
    corpus = documents_corpus(tmp_path / "corpus.jsonl")
    specs = []
    for text, name in ((BYTE_SPEC, "byte.toml"), (AUNET_SPEC, "aunet.toml")):
        (tmp_path / name).write_text(text)
        specs.append(str(tmp_path / name))
    out = tmp_path / "sweep"
    args = [*specs, "--budgets", "1e8,2e8,4e8", "--sizes", "0.25,1", "--data", str(corpus), "--turn-steps", "50"]
    assert main(["sweep", *args, "--out", str(out), "--device", "cpu"]) == 0
    result = json.loads((out / "sweep.json").read_text())
    assert len(result["runs"]) == 2 * 2 * 3
    assert {r["arch"] for r in result["runs"]} == {"byte-small", "aunet-small"}
    for arch, rows in result["optimal"].items():
        assert [r["budget"] for r in rows] == [1e8, 2e8, 4e8]
        for row in rows:  # the lowest loss of its budget
            same = [r["val_bpb"] for r in result["runs"] if r["arch"] == arch and r["budget"] == row["budget"]]
            assert row["val_bpb"] == min(same)
        assert (result["fits"][arch] is None) == (arch in result["no_law"])
    for budget in ("1e+08", "2e+08", "4e+08"):
        assert (out / f"budget-{budget}" / "compare.json").is_file()
    assert "| architecture | E | A | alpha |" in (out / "sweep.md").read_text()
    printed = capsys.readouterr().out
    assert "| byte-small | x0.25 |" in printed

    # Resumed: every budget is done, so nothing trains again and the same report comes back.
    assert main(["sweep", *args, "--out", str(out), "--device", "cpu", "--resume"]) == 0
    assert json.loads((out / "sweep.json").read_text())["runs"] == result["runs"]
    # Another sweep's folder is refused, with what to do.
    capsys.readouterr()
    assert main(["sweep", *specs, "--budgets", "1e8", "--out", str(out), "--resume"]) == 2
    assert "holds another sweep" in capsys.readouterr().err
    assert main(["sweep", *specs, "--budgets", "1e8", "--out", str(out)]) == 2
    assert "is not empty" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["1e13,x", "0,1e13", ""])
def test_bad_budgets_are_one_line(bad: str, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["sweep", "byte-tiny", "--budgets", bad, "--out", "/tmp/never"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "--budgets" in err and "Traceback" not in err
