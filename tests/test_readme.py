"""The README's Python snippets run as written (blocks right after ``<!-- tested -->``)."""

from __future__ import annotations

import re

import pytest
from conftest import ROOT

BLOCKS = re.findall(r"<!-- tested -->\s*```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_readme_has_tested_snippets() -> None:
    assert BLOCKS, "no <!-- tested --> python block in README.md"


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_snippet_runs(code: str, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)  # what a user runs from anywhere; files it writes land here
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
