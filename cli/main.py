"""The ``aunet`` command line: it only dispatches.

Every command is a module of its own that adds itself through the ``aunet_add_commands`` hook,
loaded from the ``aunet.commands`` entry-point group: aunet's own (``aunet.cli.train``,
``aunet.cli.evaluate``...) first, then its integrations' (``export``, ``harness``), then any
third party's, exactly alike (``examples/aunet-example-command``). User errors (a missing file, a
bad spec, an unknown kind) print one line each, ``aunet: error: ...``, on stderr and exit with
status 2, never a traceback; anything else that escapes is a bug.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from aunet.cli.options import EXIT_USAGE, Commands, Parser, tag_subparsers
from aunet.core.errors import AunetError
from aunet.core.registry import COMMANDS_GROUP, Origin, default_registry


def build_parser() -> Parser:
    """The parser of every command the plugins add (the command plugins are loaded here, once)."""
    registry = default_registry()
    if not registry.commands_loaded:
        registry.load_entry_points(COMMANDS_GROUP)
        registry.check_pending()
        registry.commands_loaded = True
    parser = Parser(prog="aunet", description="Autoregressive U-Nets: tokenizer-free language models.")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=Parser)
    taken: dict[str, Origin] = {}
    hooks = sorted(registry.command_hooks(), key=lambda hook: _place(hook[0]))
    for origin, add in hooks:
        add(commands=Commands(sub, origin, taken))
    registry.commands = taken
    tag_subparsers(parser)
    return parser


#: The order aunet's own commands are listed in (``aunet --help``, the table of docs/reference/cli.md); plugins'
#: commands follow, in the order they load.
BUILTIN_ORDER = (
    "builtin-plugins",
    "builtin-spec",
    "builtin-split",
    "builtin-train",
    "builtin-profile",
    "builtin-eval",
    "builtin-generate",
    "builtin-experiments",
    "builtin-launch",
    "builtin-integrations",
)


def _place(origin: Origin) -> int:
    return (
        BUILTIN_ORDER.index(origin.plugin) if origin.builtin and origin.plugin in BUILTIN_ORDER else len(BUILTIN_ORDER)
    )


def commands(parser: argparse.ArgumentParser) -> list[str]:
    """The names of the commands ``parser`` knows."""
    return [
        name for action in parser._actions if isinstance(action, argparse._SubParsersAction) for name in action.choices
    ]


def main(argv: Sequence[str] | None = None) -> int:
    # Before torch loads: idle OpenMP threads sleep instead of spinning (on a machine whose cores
    # are shared, spinning threads made each parallel op cost up to 8 ms).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        parser = build_parser()
    except AunetError as exc:  # a command plugin that cannot load, or takes a taken name
        for line in exc.lines():
            print(f"aunet: error: {line}", file=sys.stderr)
        return EXIT_USAGE
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["launch"]:  # torchrun's options, then an aunet command: not parsed here
        try:
            from aunet.cli.launch import launch

            return launch(argv[1:], commands=[c for c in commands(parser) if c != "launch"])
        except AunetError as exc:
            for line in exc.lines():
                print(f"aunet: error: {line}", file=sys.stderr)
            return EXIT_USAGE
    args, extras = parser.parse_known_args(argv)
    if extras:
        getattr(args, "parser", parser).unrecognized(extras)
    if not getattr(args, "run", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        if hasattr(args, "threads"):
            from aunet.jobs.runtime.devices import parse_threads, set_process_threads

            set_process_threads(parse_threads(args.threads))
        return args.run(args)
    except AunetError as exc:
        # Under torchrun every process meets the same errors: the first prints them, and a
        # process prints its own only (with its rank).
        rank, size = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
        if (rank == 0 and not exc.quiet) or exc.rank_local:
            where = f"[rank {rank} of {size}] " if size > 1 else ""
            # One write per line: the processes of a job share stderr, and print() writes a
            # line's text and its newline apart, so two processes' lines could run together.
            for line in exc.lines():
                sys.stderr.write(f"aunet: error: {where}{line}\n")
                sys.stderr.flush()
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("aunet: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `aunet split ... | head`: the reader left; that is not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
