"""The README's Python snippets run as written (blocks right after ``<!-- tested -->``)."""

from __future__ import annotations

import re

import pytest

from conftest import ROOT

BLOCKS = re.findall(r"<!-- tested -->\s*```python\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)


def test_readme_has_tested_snippets() -> None:
    assert BLOCKS, "no <!-- tested --> python block in README.md"


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_snippet_runs(code: str, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)  # what a user runs from anywhere; files it writes land here
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})  # noqa: S102 - the README's own code


def test_the_command_table_lists_every_flag() -> None:
    import argparse

    from aunet.cli.main import build_parser

    text = (ROOT / "README.md").read_text()
    table = text[text.index("| command | what it does |") :]
    table = table[: table.index("\n\n")]
    rows = {}
    for line in table.splitlines()[2:]:
        cell = line.replace("\\|", "\x00").split("|")[1].strip().strip("`").replace("\x00", "|")
        words = cell.split()
        name = " ".join(words[:3] if words[1] == "spec" else words[:2])
        rows[name] = cell

    def commands(parser: argparse.ArgumentParser, prefix: str):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from commands(sub, f"{prefix} {name}")
                return
        yield prefix, parser

    missing = []
    for name, parser in commands(build_parser(), "aunet"):
        assert name in rows, f"README's command table has no row for `{name}`"
        for action in parser._actions:
            flags = [o for o in action.option_strings if o.startswith("--") and o != "--help"]
            if flags and not any(f in rows[name] for f in flags):
                missing.append(f"{name} {flags[0]}")
    assert not missing, missing
