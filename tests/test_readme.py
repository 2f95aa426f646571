"""The documentation's Python blocks run as written (blocks right after ``<!-- tested -->``, in
the README and in every page under docs/), and the command-line reference names every command and
every option."""

from __future__ import annotations

import pytest

from conftest import ROOT, runnable_blocks

BLOCKS = runnable_blocks()

#: The page that holds the command table (its header row: ``| command | what it does |``).
COMMAND_TABLE = ROOT / "docs" / "reference" / "cli.md"


def test_the_documentation_has_tested_snippets() -> None:
    files = {file for file, _ in BLOCKS}
    assert "README.md" in files, "no <!-- tested --> python block in README.md"
    assert "docs/guides/python-api.md" in files, "no <!-- tested --> python block in docs/guides/python-api.md"


@pytest.mark.parametrize(("file", "code"), BLOCKS, ids=[f"{file}:block{i}" for i, (file, _) in enumerate(BLOCKS)])
def test_snippet_runs(file: str, code: str, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)  # what a user runs from anywhere; files it writes land here
    exec(compile(code, file, "exec"), {"__name__": "readme"})  # noqa: S102 - the documentation's own code


def test_the_command_table_lists_every_flag() -> None:
    import argparse

    from aunet.cli.main import build_parser

    text = COMMAND_TABLE.read_text(encoding="utf-8")
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
        assert name in rows, f"{COMMAND_TABLE.relative_to(ROOT)}'s command table has no row for `{name}`"
        for action in parser._actions:
            flags = [o for o in action.option_strings if o.startswith("--") and o != "--help"]
            if flags and not any(f in rows[name] for f in flags):
                missing.append(f"{name} {flags[0]}")
    assert not missing, missing
