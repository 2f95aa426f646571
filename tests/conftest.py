"""Shared fixtures and the hypothesis profiles.

Profiles (select with HYPOTHESIS_PROFILE=...): ``ci`` (the default here and in .ci/run: 100
examples, derandomized so a CI failure reproduces), ``dev`` (20 examples, for quick local runs),
``thorough`` (1000 examples, before a release). Input sizes are bounded by
``aunet.testing.MAX_BYTES``.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

# Before torch loads (the command line does the same): idle OpenMP threads sleep instead of
# spinning. Under pytest-xdist (``-n 2``) each worker also keeps to one thread, so two workers on
# two cores never oversubscribe them; a spinning or extra thread made every parallel op of the
# other worker wait (a 0.6 s test took 34 s).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=100,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)


def examples(*, ci: int, dev: int, thorough: int) -> int:
    """Examples of a property slower than the profile's own count, under the loaded profile
    (``ci``'s under any other)."""
    return {"ci": ci, "dev": dev, "thorough": thorough}.get(PROFILE, ci)


#: Examples of the properties that build whole models (tests/test_model.py, test_generate.py).
MODEL_EXAMPLES = examples(ci=25, dev=8, thorough=300)
#: Examples of the attention backends' properties against the oracle (tests/test_attention.py).
ATTENTION_EXAMPLES = examples(ci=12, dev=5, thorough=200)

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"

#: A Python block that claims to run: the fenced block right after a line ``<!-- tested -->``.
TESTED_BLOCK = re.compile(r"<!-- tested -->\s*```python\n(.*?)```", re.DOTALL)


def documentation() -> list[Path]:
    """The README and every page of the documentation site."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def runnable_blocks() -> list[tuple[str, str]]:
    """``(file, code)`` of every ``<!-- tested -->`` Python block of the documentation, ``file``
    relative to the repository root."""
    return [
        (str(path.relative_to(ROOT)), code)
        for path in documentation()
        for code in TESTED_BLOCK.findall(path.read_text(encoding="utf-8"))
    ]


#: A spec that trains in a fraction of a second per step, for the job tests.
TINY = """
[model]
context = 64
[[levels]]
dim = 32
stage = { kind = "transformer", layers = 1, head_dim = 16 }
[[levels]]
dim = 48
splitter = "whitespace"
stage = { kind = "transformer", layers = 1, head_dim = 16 }
[train]
batch_size = 4
checkpoint = { every = 4, keep = 2 }
eval = { every = 5, bytes = 2000 }
metrics = { every = 1 }
sample = { bytes = 0 }
"""

TEXT = (
    "In the beginning, God created the heavens and the earth. The earth was formless and empty. "
    "Darkness was on the surface of the deep and God's Spirit was hovering over the surface of the waters.\n"
) * 40


@pytest.fixture
def corpus_file(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT)
    return path


def documents_corpus(path: Path) -> Path:
    """30 short documents of Genesis as JSON lines (a corpus of many documents, for comparisons)."""
    verse = TEXT.splitlines()[0] + " "
    path.write_text("".join(json.dumps({"text": f"{i}. " + verse * (1 + i % 3)}) + "\n" for i in range(30)))
    return path


#: A flat byte model of one small layer (a comparison's baseline in the job tests).
BYTE_SPEC = """
name = "byte-small"
[model]
context = 128
[[levels]]
dim = 32
stage = { kind = "transformer", layers = 1, head_dim = 16 }
[train]
batch_size = 2
"""


@pytest.fixture
def spec():
    from aunet.jobs.config import parse_spec

    return parse_spec(TINY, name="tiny")


def write_spec(folder: Path, text: str = TINY) -> Path:
    path = folder / "tiny.toml"
    path.write_text(text)
    return path


@pytest.fixture
def registry():
    """A fresh registry with the installed plugins (built-ins included)."""
    from aunet.core.registry import Registry

    return Registry.default()


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None, process: bool = False):
    """Run the ``aunet`` command line; returns a CompletedProcess (text mode).

    In this process by default (``aunet.cli.main.main`` with stdout and stderr captured): the
    same code path without a second torch import, which would cost seconds per call. In a fresh
    ``python -m aunet`` process when ``process`` is set or ``env`` is given (the plugin registry
    is per process, and so is the environment it reads).
    """
    import contextlib
    import io
    import subprocess

    if process or env:
        full_env = {**os.environ, **(env or {})}
        return subprocess.run(
            [sys.executable, "-m", "aunet", *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=600
        )
    from aunet.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    before = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse's usage errors
                code = exc.code if isinstance(exc.code, int) else 2
    finally:
        os.chdir(before)
    return subprocess.CompletedProcess(["aunet", *args], code, out.getvalue(), err.getvalue())


#: aunet2-tiny shrunk to train in well under a second per step (widths 32 and 64, one trunk layer).
SHRUNK_AUNET2 = (
    "train.batch_size=2",
    "train.sample.bytes=0",
    "train.eval.every=1000",
    "train.eval.bytes=500",
    "levels[0].dim=32",
    "levels[0].stage.head_dim=16",
    "levels[1].dim=64",
    "levels[1].stage.layers=1",
    "levels[1].stage.head_dim=32",
)


def train_small_run(
    folder: Path,
    *,
    context: int,
    steps: int,
    overrides: tuple[str, ...] = (),
    text: str = "In the beginning God created the heavens and the earth. The earth was empty.\n",
) -> Path:
    """A real run directory: a shrunk aunet2-tiny trained for ``steps`` steps on ``text`` x 40
    (for the tests of what consumes checkpoints: generation, export, the harness)."""
    import aunet
    from aunet.core.overrides import apply_overrides
    from aunet.jobs.train.loop import train

    spec = apply_overrides(aunet.load_spec("aunet2-tiny"), [f"model.context={context}", *SHRUNK_AUNET2, *overrides])
    corpus = folder / "corpus.txt"
    corpus.write_text(text * 40)
    train(spec, data=corpus, out=folder / "run", steps=steps, device="cpu")
    return folder / "run"


def profile_tiny(spec: str, out: Path, *extra: str) -> None:
    """``aunet profile`` of a shipped spec for two steps of two rows of 128 positions on the CPU,
    asserting that it ran and printed its step time."""
    profiled = run_cli(
        "profile",
        "--spec",
        spec,
        "--steps",
        "2",
        "--out",
        str(out),
        "--device",
        "cpu",
        "--context",
        "128",
        "--batch",
        "2",
        "--attention",
        "sdpa",
        *extra,
    )
    assert profiled.returncode == 0, profiled.stderr
    assert "ms per step" in profiled.stdout
