"""A third-party command, installed from ``examples/aunet-example-command`` as a user would
(a real wheel, its entry point in the ``aunet.commands`` group): listed by ``aunet --help`` and
``aunet plugins``, and run against a trained run (the release fixture's)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import aunet
from aunet.jobs.inference.evaluate import evaluate
from aunet.jobs.runtime.devices import threads

from conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "aunet-example-command"
RUN = Path(__file__).with_name("data") / "release-0.1.0" / "run"
TEXT = "In the beginning God created the heaven and the earth."


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
        + ["--target", str(target), str(EXAMPLE)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return {"PYTHONPATH": str(target)}


@pytest.mark.slow
def test_the_example_command_is_listed_and_scores_a_run(installed: dict[str, str]) -> None:
    listed = run_cli("--help", env=installed)
    assert listed.returncode == 0 and "score" in listed.stdout and "bits per byte of a text" in listed.stdout
    commands = {c["command"]: c for c in json.loads(run_cli("plugins", "--json", env=installed).stdout)["commands"]}
    assert commands["score"]["distribution"] == "aunet-example-command" and not commands["score"]["builtin"]
    assert commands["score"]["version"] == "1.0.0"

    scored = run_cli("score", "--ckpt", str(RUN), "--text", TEXT, "--json", "--threads", "1", env=installed)
    assert scored.returncode == 0, scored.stderr
    out = json.loads(scored.stdout)
    run = aunet.load_run(RUN)
    with threads(1):
        expected = evaluate(
            run.model, run.encoding, [run.encoding.encode(TEXT.encode())], context=run.spec.model.context
        )
    assert out["bytes"] == len(TEXT) and out["bpb"] == pytest.approx(expected.bpb, rel=1e-6)

    refused = run_cli("score", "--ckpt", str(RUN), "--text", "", env=installed)
    assert refused.returncode == 2 and "nothing to score" in refused.stderr and "Traceback" not in refused.stderr
    # Without the package the command is unknown, and says so in one line.
    missing = run_cli("score", "--ckpt", str(RUN), "--text", TEXT)
    assert missing.returncode == 2 and "invalid choice: 'score'" in missing.stderr
