"""What every command shares: the parser that keeps errors to one line, the registrar commands are
added through (``Commands``, what ``aunet_add_commands`` receives), the options of commands that
run a model (``--device``, ``--threads``), number types for argparse, and a spec checked at its
source. A third-party command uses these exactly as aunet's own do."""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

from aunet.core.errors import PluginError, SpecError, did_you_mean
from aunet.core.registry import Origin
from aunet.core.validators import MAX_COUNT, MAX_SEED

EXIT_USAGE = 2


#: The spec ``aunet train`` trains when given none (shipped, so it loads from any directory).
DEFAULT_SPEC = "aunet2-tiny"


class Parser(argparse.ArgumentParser):
    """argparse, with errors in the same one-line shape as every other user error, and without
    prefix matching (``--step 5`` must not mean ``--steps 5``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"aunet: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)

    def unrecognized(self, extras: list[str]) -> None:
        """Refuse arguments this command does not take, suggesting the nearest flag."""
        flags = [o for o in self._option_string_actions if o.startswith("--")]
        hints = []
        for extra in extras:
            if extra.startswith("-"):
                hint = did_you_mean(extra.split("=", 1)[0], flags)
                if hint:
                    hints.append(f"{extra.split('=', 1)[0]}: {hint.removeprefix('; ')}")
        self.error(f"unrecognized arguments: {' '.join(extras)}" + (f" ({'; '.join(hints)})" if hints else ""))


def tag_subparsers(parser: argparse.ArgumentParser) -> None:
    """Every (sub)command records its own parser, so errors can name its flags."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                sub.set_defaults(parser=sub)
                tag_subparsers(sub)


def runtime_options(p: argparse.ArgumentParser) -> None:
    """``--device`` and ``--threads``, on every command that runs a model."""
    p.add_argument(
        "--device",
        default="auto",
        metavar="D",
        help="auto (CUDA when present, then MPS, else CPU), cpu, cuda, cuda:N or mps (default auto)",
    )
    p.add_argument(
        "--threads",
        default="auto",
        metavar="N",
        help="CPU threads for torch (default auto: one per physical core; decoding a few rows uses one)",
    )


def number(
    convert: Callable[[str], Any], minimum: float, strict: bool, maximum: float | None = None
) -> Callable[[str], Any]:
    """An argparse type: a finite ``convert(text)`` at least ``minimum`` (above it when ``strict``),
    at most ``maximum``."""
    noun = "a whole number" if convert is int else "a number"
    rule = f"> {minimum}" if strict else f"at least {minimum}"

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {noun}, got '{text}'") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {value}")
        if not (value > minimum if strict else value >= minimum):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum:,}, got {value:,}")
        return value

    return parse


positive_int = number(int, 1, strict=False, maximum=MAX_COUNT)


positive_float = number(float, 0, strict=True, maximum=1e12)


non_negative_float = number(float, 0, strict=False, maximum=1e12)


seed = number(int, 0, strict=False, maximum=MAX_SEED)


flops = number(float, 0, strict=True, maximum=1e30)


def step_range(text: str) -> tuple[int, int]:
    """``A:B`` (or ``A``): steps A to B, 1-based, A <= B."""
    first, sep, last = text.partition(":")
    try:
        start, stop = int(first), int(last if sep else first)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected A:B (steps, e.g. 10:12), got '{text}'") from None
    if not 1 <= start <= stop:
        raise argparse.ArgumentTypeError(f"expected 1 <= A <= B, got {start}:{stop}")
    return start, stop


def checked(spec, source: str, overrides: Sequence[str] = (), *, resolve: bool = True):
    """The resolved spec, or SpecError with every problem, each at its source (the file, or the
    ``--set`` behind it). A spec without any stage is a splitting-only spec (``aunet split
    --spec``) and is checked as such. Without ``resolve`` the spec is checked as given (its
    defaults not filled in: the trainer resolves it once, with its data's contraction)."""
    from aunet.core.overrides import attribute, override_sources
    from aunet.core.spec import resolve_spec

    if all(level.stage is None for level in spec.levels):
        problems = spec.check_splitting()
    else:
        try:
            spec = resolve_spec(spec) if resolve else spec
        except SpecError as exc:  # what resolving reads failed: a splitter's model (pinning it)
            raise SpecError(attribute(exc.issues, override_sources(overrides)), source=source) from None
        problems = spec.check_model()
    if problems:
        raise SpecError(attribute(problems, override_sources(overrides)), source=source)
    return spec


def is_model_spec(spec) -> bool:
    return any(level.stage is not None for level in spec.levels)


def visible_text(data: bytes) -> str:
    """Bytes for a terminal: UTF-8 where valid, U+FFFD where not."""
    return data.decode("utf-8", "replace")


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")


_COMMAND_RE = re.compile(r"^[a-z][a-z0-9-]*$")


class Commands:
    """What ``aunet_add_commands`` receives: ``add_command(name, help=...)`` adds a command and
    returns its parser (``Parser``: argparse, errors in one line); the command's ``run(args)``
    is set with ``parser.set_defaults(run=...)`` and returns the exit status. One registrar per
    plugin, so a name taken twice names both plugins."""

    def __init__(self, subparsers: Any, origin: Origin, taken: dict[str, Origin]) -> None:
        self._subparsers = subparsers
        self._origin = origin
        self._taken = taken

    def add_command(
        self, name: str, *, help: str, run: Callable[[argparse.Namespace], int] | None = None, **kwargs: Any
    ) -> Parser:
        if not isinstance(name, str) or not _COMMAND_RE.match(name):
            raise PluginError(f"{self._origin}: a command name is lowercase letters, digits and hyphens, got {name!r}")
        if name in self._taken:
            raise PluginError(f"{self._origin}: the command '{name}' is already added by {self._taken[name]}")
        self._taken[name] = self._origin
        parser = self._subparsers.add_parser(name, help=help, **kwargs)
        if run is not None:
            parser.set_defaults(run=run)
        return parser
