"""User errors: bad input that aunet reports in one clear line, never as a traceback.

Every exception here derives from ``AunetError``; the CLI prints ``aunet: error: <message>`` for
each (one line per problem) and exits with status 2. Anything else that escapes is a bug in aunet
and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

import attrs


class AunetError(Exception):
    """Bad input from the user: a file, a flag, a spec, a plugin, a checkpoint.

    In a run of several processes every process meets the same errors, and only the first
    prints them; ``rank_local`` marks one that only this process met (it prints it, with its
    rank), ``quiet`` one that another process reports.
    """

    rank_local: bool = False
    quiet: bool = False

    def lines(self) -> list[str]:
        """The message as lines, one per problem."""
        return str(self).splitlines() or [type(self).__name__]


@attrs.frozen
class SpecIssue:
    """One problem in a spec, at a path such as ``levels[1].splitter.kind``; ``source`` names
    where the bad value came from when that is not the spec's own source (a ``--set``)."""

    path: str
    message: str
    source: str | None = attrs.field(default=None, kw_only=True)

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class SpecError(AunetError, ValueError):
    """A spec with one or more problems; ``issues`` lists every one of them."""

    def __init__(self, issues: Sequence[SpecIssue], source: str | None = None) -> None:
        self.issues = tuple(issues)
        self.source = source
        lines = []
        for issue in self.issues:
            where = issue.source or source
            lines.append(f"{where}: {issue}" if where else str(issue))
        super().__init__("\n".join(lines))


class PluginError(AunetError):
    """A plugin that cannot be loaded or registered (import error, duplicate kind, bad hook)."""


class InputError(AunetError):
    """A missing or unreadable file, an empty corpus, a bad flag value."""


def known_list(names: Iterable[str]) -> str:
    """``a, b, c`` sorted, or ``(none)``."""
    names = sorted(names)
    return ", ".join(names) if names else "(none)"


def did_you_mean(name: str, names: Iterable[str]) -> str:
    """``; did you mean 'x'?`` for the nearest known name, or an empty string."""
    close = difflib.get_close_matches(name, list(names), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""
