"""The code is as ruff formats and checks it (the rules in ``pyproject.toml``): the formatter wins,
with no ``fmt: skip`` walls, and the checks pass, so that CI holds every change to them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT

ruff = pytest.importorskip("ruff", reason="ruff is not installed (the test extra installs it)")


def _ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_ruff_format_leaves_every_file_as_it_is() -> None:
    result = _ruff("format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_check_passes() -> None:
    result = _ruff("check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_file_exempts_itself_from_the_formatter() -> None:
    marker = "# fmt: " + "skip"  # spelt in two so that this file holds none
    found = [
        str(p.relative_to(ROOT))
        for p in ROOT.rglob("*.py")
        if ".venv" not in p.parts and "data" not in p.parts and marker in p.read_text(encoding="utf-8")
    ]
    assert not found, found
