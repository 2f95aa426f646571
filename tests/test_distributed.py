"""torchrun on CPU (gloo, 2 processes): DDP and FSDP2 compute the single-process losses, a sharded
checkpoint resumes on 2 processes and on 1 after a SIGKILL, only rank 0 writes, and errors are
shown once."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aunet.jobs.runs import checkpoint

from conftest import run_cli

SPEC = """
[model]
context = 64
[[levels]]
dim = 32
stage = { kind = "transformer", layers = 2, head_dim = 16 }
[[levels]]
dim = 48
splitter = "whitespace"
stage = { kind = "transformer", layers = 1, head_dim = 16 }
[train]
batch_size = 4
grad_accum = 2
checkpoint = { every = 4, keep = 3 }
eval = { every = 1000, bytes = 2000, final_bytes = 2000 }
metrics = { every = 1 }
sample = { bytes = 0 }
"""
#: Relative difference allowed between N processes and one (the order of float sums differs);
#: measured: 9.6e-8 (DDP and FSDP2, 12 steps, 2026-12-01).
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import lzma

    from conftest import ROOT

    folder = tmp_path_factory.mktemp("dist")
    (folder / "spec.toml").write_text(SPEC)
    with lzma.open(ROOT / "corpora" / "en_web.txt.xz") as f:
        (folder / "c.txt").write_bytes(f.read(60_000))
    return folder


def torchrun(folder: Path, *args: str, nproc: int = 2, wait: bool = True):
    argv = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(nproc),
        "-m",
        "aunet",
        "train",
        *args,
    ]
    # torchrun's log folders (torchelastic_*) go to the test's own folder, not the machine's /tmp.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(folder)}
    if not wait:
        return subprocess.Popen(argv, cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True, timeout=600)


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "zombie" not in status.read_text().lower()
    except OSError:
        return False


def losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]


def worst(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b), (len(a), len(b))
    return max(abs(x - y) / abs(x) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def single(setup: Path) -> list[float]:
    result = run_cli(
        "train",
        "--spec",
        str(setup / "spec.toml"),
        "--data",
        str(setup / "c.txt"),
        "--out",
        str(setup / "single"),
        "--steps",
        "12",
    )
    assert result.returncode == 0, result.stderr
    return losses(setup / "single")


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_compute_the_single_process_losses(setup: Path, single: list[float], parallel: str) -> None:
    run = setup / parallel
    result = torchrun(
        setup, "--spec", "spec.toml", "--data", "c.txt", "--out", parallel, "--steps", "12", "--parallel", parallel
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert worst(single, losses(run)) < TOLERANCE
    # Rank 0 alone writes: one record per step, one spec, one final evaluation.
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == list(range(1, 13))
    assert sum(1 for r in records if r.get("final")) == 1
    assert result.stdout.count("validation:") == 1
    meta = checkpoint.read_meta(checkpoint.latest(run))
    assert meta["processes"] == 2 and meta["format"] == ("sharded" if parallel == "fsdp" else "whole")
    # The checkpoint is read on one process, without torchrun.
    evaluated = run_cli("eval", "--ckpt", str(run), "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    reference = run_cli("eval", "--ckpt", str(setup / "single"), "--json")
    assert abs(json.loads(evaluated.stdout)["bpb"] - json.loads(reference.stdout)["bpb"]) < 1e-4


@pytest.mark.slow
def test_a_killed_fsdp_run_resumes_on_two_processes_and_on_one(setup: Path, single: list[float]) -> None:
    import shutil

    proc = torchrun(
        setup,
        "--spec",
        "spec.toml",
        "--data",
        "c.txt",
        "--out",
        "killed",
        "--steps",
        "12",
        "--parallel",
        "fsdp",
        wait=False,
    )
    deadline = time.time() + 600
    while time.time() < deadline and not (setup / "killed" / "checkpoints" / "step-00000004" / "meta.json").exists():
        time.sleep(0.05)
    # torchrun starts its workers in sessions of their own: kill them and it at once, found by the
    # run directory in their command lines.
    found = subprocess.run(["pgrep", "-f", "--", "--out killed "], capture_output=True, text=True).stdout.split()
    pids = [int(p) for p in found if int(p) != os.getpid()]
    assert len(pids) >= 3, pids  # torchrun and two workers
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()
    for pid in pids:
        while _alive(pid):
            time.sleep(0.05)
    assert checkpoint.newest_complete(setup / "killed")[0] is not None
    shutil.copytree(setup / "killed", setup / "killed-1")  # the same killed run, resumed twice
    (setup / "killed-1" / ".lock").unlink(missing_ok=True)
    on_two = torchrun(setup, "--out", "killed", "--resume")
    assert on_two.returncode == 0, on_two.stderr[-3000:]
    on_one = run_cli("train", "--out", str(setup / "killed-1"), "--resume", "--parallel", "none")
    assert on_one.returncode == 0, on_one.stderr[-3000:]
    assert worst(single, losses(setup / "killed")) < TOLERANCE
    assert worst(single, losses(setup / "killed-1")) < TOLERANCE


@pytest.mark.slow
def test_an_error_is_shown_once(setup: Path) -> None:
    result = torchrun(
        setup, "--spec", "spec.toml", "--data", "missing.txt", "--out", "x", "--steps", "2", "--parallel", "ddp"
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("aunet: error:")]
    assert result.returncode != 0 and len(errors) == 1, result.stderr[-2000:]
    assert "[rank 0 of 2] --data: 'missing.txt' does not exist" in errors[0]


def test_parallel_outside_torchrun_shows_the_command(tmp_path: Path) -> None:
    result = run_cli("train", "--steps", "1", "--parallel", "fsdp", "--out", str(tmp_path / "r"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (
        "--parallel fsdp needs the processes torchrun starts: torchrun --nproc-per-node N -m aunet train"
        in result.stderr
    )
