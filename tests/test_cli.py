"""The command line: output shapes, and one clear line with exit code 2 for every user error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli


def assert_user_error(result, *fragments: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("aunet: error:")]
    assert errors, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)


def test_plugins_json_lists_the_builtin_splitters() -> None:
    result = run_cli("plugins", "--json")
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    assert set(listing["families"]) == {
        "splitter",
        "router",
        "stage",
        "pooler",
        "upsampler",
        "attention",
        "metric_writer",
    }
    assert [e["kind"] for e in listing["families"]["router"]] == ["dynamic"]
    splitters = {e["kind"]: e for e in listing["families"]["splitter"]}
    for kind in ("whitespace", "word-pair", "4-word"):
        assert splitters[kind]["distribution"] == "aunet" and splitters[kind]["version"]
    assert any(p["name"] == "builtin-splitters" for p in listing["plugins"])


def test_plugins_human_listing() -> None:
    result = run_cli("plugins")
    assert result.returncode == 0 and "whitespace" in result.stdout and "splitter:" in result.stdout


def test_split_json() -> None:
    result = run_cli("split", "--splitters", "whitespace,word-pair", "--text", "The cat sat on", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["n_bytes"] == 14
    assert out["levels"] == [0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0]
    assert out["bytes_per_segment"] == [3.5, 7.0]
    assert out["splitters"] == ["whitespace", "word-pair"]


def test_split_human_view_marks_boundaries_per_level() -> None:
    result = run_cli("split", "--splitters", "whitespace,word-pair", "--text", "The cat sat on\nthe mat")
    assert result.returncode == 0, result.stderr
    assert "The |cat |sat |on⏎\n|the |mat" in result.stdout
    assert "The cat |sat on⏎\n|the mat" in result.stdout
    assert "level 1 (whitespace): 6 segments, 3.67 bytes per segment" in result.stdout


def test_split_file_with_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bin"
    path.write_bytes(b"ab \xff\xfe cd\x00 ")
    out = json.loads(run_cli("split", "--splitters", "whitespace", "--file", str(path), "--json").stdout)
    assert out["n_bytes"] == 10 and len(out["levels"]) == 10
    human = run_cli("split", "--splitters", "whitespace", "--file", str(path)).stdout
    assert "\\xff" in human


def test_split_with_spec(tmp_path: Path) -> None:
    spec = tmp_path / "s.toml"
    spec.write_text(
        '[[levels]]\n[[levels]]\nsplitter = "whitespace"\n[[levels]]\nsplitter = { kind = "n-word", n = 3 }\n'
    )
    out = json.loads(run_cli("split", "--spec", str(spec), "--text", "a b c d e f g", "--json").stdout)
    assert out["splitters"] == ["whitespace", "n-word"]
    assert [i for i, v in enumerate(out["levels"]) if v == 2] == [5, 11]


def test_split_draws_a_prefix_and_says_so() -> None:
    result = run_cli("split", "--splitters", "whitespace", "--text", "word " * 100, "--show", "20")
    assert "drawing the first 20 of 500 bytes" in result.stdout


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (
            ["split", "--splitters", "whitespce", "--text", "x"],
            ["unknown splitter 'whitespce'", "did you mean 'whitespace'"],
        ),
        (["split", "--splitters", "whitespace,,word-pair", "--text", "x"], ["empty kind"]),
        (["split", "--splitters", "n-word", "--text", "x"], ["'n-word' needs options"]),
        (
            ["split", "--splitters", "word-pair,whitespace", "--text", "x"],
            ["--splitters[2].splitter.kind", "cannot sit above"],
        ),
        (
            ["split", "--splitters", "whitespace", "--file", "/nonexistent/file.txt"],
            ["--file: '/nonexistent/file.txt' does not exist"],
        ),
        (["split", "--splitters", "whitespace", "--file", "/"], ["is a directory"]),
        (["split", "--splitters", "whitespace"], ["one of the arguments --text --file --suite is required"]),
        (["split", "--spec", "/nonexistent.toml", "--text", "x"], ["spec file '/nonexistent.toml' does not exist"]),
        (["spec", "check", "/nonexistent.toml"], ["does not exist"]),
        (["frobnicate"], ["invalid choice: 'frobnicate'"]),
    ],
)
def test_user_errors_exit_2_with_one_clear_line(args: list[str], fragments: list[str]) -> None:
    assert_user_error(run_cli(*args), *fragments)


def test_unreadable_path_is_a_clear_error(tmp_path: Path) -> None:
    # Running as root makes chmod 000 readable; a path through a regular file is unreadable for all.
    (tmp_path / "file").write_text("x")
    assert_user_error(
        run_cli("split", "--splitters", "whitespace", "--file", str(tmp_path / "file" / "x")), "cannot read"
    )


def test_spec_check_reports_every_mistake_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[[levels]]\ndim = "256"\n[[levels]]\nsplitter = { kind = "whitespce" }\n[[levels]]\n'
        'splitter = "word-pair"\ncolour = "red"\n'
    )
    result = run_cli("spec", "check", str(bad))
    assert_user_error(result)
    errors = [line for line in result.stderr.splitlines() if line.startswith("aunet: error:")]
    assert [e.split(": ")[2] for e in errors] == [str(bad), str(bad), str(bad)]
    assert [e.split(": ")[3] for e in errors] == ["levels[0].dim", "levels[1].splitter.kind", "levels[2].colour"]


def test_spec_show_round_trips(tmp_path: Path) -> None:
    spec = tmp_path / "s.toml"
    spec.write_text('[[levels]]\ndim = 64\n[[levels]]\nsplitter = "whitespace"\n')
    shown = run_cli("spec", "show", str(spec))
    assert shown.returncode == 0, shown.stderr
    again = tmp_path / "again.toml"
    again.write_text(shown.stdout)
    first = json.loads(run_cli("spec", "show", str(spec), "--json").stdout)["spec"]
    second = json.loads(run_cli("spec", "show", str(again), "--json").stdout)["spec"]
    assert first["levels"] == second["levels"] and first["name"] == "s"


@pytest.mark.slow
def test_benchmark_splitters_runs() -> None:
    import subprocess
    import sys

    from conftest import ROOT

    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "splitters", "--json", "--rounds", "1", "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)["records"]
    assert {(r["levels"], r["mode"]) for r in records} >= {(3, "batch"), (3, "stream-bytes")}
    assert all(r["mb_per_s"] > 0 for r in records)


@pytest.mark.slow
def test_gpu_check_script_runs_on_a_cpu_in_smoke_mode() -> None:
    import subprocess
    import sys

    from conftest import ROOT

    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "gpu-check", "--device", "cpu", "--smoke", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)["records"][0]
    for part in ("attention_8192", "train_step", "profile_aunet2_1b_reduced", "decoding_graphs"):
        assert part in summary and "error" not in (summary[part] if isinstance(summary[part], dict) else {}), part
    assert {r["kind"] for r in summary["attention_8192"] if "ms" in r} >= {"sdpa", "math", "flex"}
    assert any(p["kind"] == "sdpa" and p["labels"] for p in summary["profile_aunet2_1b_reduced"])
    decoding = summary["decoding_graphs"]["records"]
    assert {r["spec"] for r in decoding} == {"byte-tiny", "aunet2-tiny"} and all(r["bytes_per_s"] > 0 for r in decoding)


@pytest.mark.slow
def test_the_prefill_benchmark_runs_and_times_whole_and_chunked_prefills() -> None:
    import subprocess
    import sys

    from conftest import ROOT

    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "prefill", "--smoke", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = json.loads(result.stdout)["records"]
    assert {(r["spec"], r["chunk"]) for r in records} == {
        (s, c) for s in ("aunet2-tiny", "byte-tiny") for c in (None, 16)
    }
    assert all(r["ms"] > 0 and r["peak_added_mb"] >= 0 for r in records)
