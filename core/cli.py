"""The ``aunet`` command line.

User errors (a missing file, a bad spec, an unknown kind) print one line each, ``aunet: error:
...``, on stderr and exit with status 2, never a traceback. Anything else that escapes is a bug.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from aunet.core.errors import AunetError, InputError, SpecError, did_you_mean, known_list
from aunet.core.registry import Family, Registry, default_registry

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, with errors in the same one-line shape as every other user error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"aunet: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return args.run(args)
    except AunetError as exc:
        for line in exc.lines():
            print(f"aunet: error: {line}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("aunet: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `aunet split ... | head`: the reader left; that is not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="aunet", description="Autoregressive U-Nets: tokenizer-free language models.")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("plugins", help="list the registered kinds of every family and where they come from")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=cmd_plugins)

    spec = sub.add_parser("spec", help="check or show a spec file")
    spec_sub = spec.add_subparsers(title="spec commands", metavar="COMMAND", parser_class=_Parser)
    p = spec_sub.add_parser("check", help="validate spec files; every problem is listed with its path")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(run=cmd_spec_check)
    p = spec_sub.add_parser("show", help="print the resolved spec, defaults filled in")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=cmd_spec_show)

    p = sub.add_parser("split", help="show where a stack of splitters puts boundaries")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--spec", metavar="FILE", help="use the splitters of this spec")
    src.add_argument("--splitters", metavar="KINDS", help="comma-separated splitter kinds, bottom level first")
    text = p.add_mutually_exclusive_group(required=True)
    text.add_argument("--text", metavar="STR", help="the text to split")
    text.add_argument("--file", metavar="PATH", help="a file to split (any bytes)")
    p.add_argument("--json", action="store_true", help="per-byte levels and statistics as JSON")
    p.add_argument("--show", type=int, default=2000, metavar="N",
                   help="bytes of the text to draw in the human view (default 2000)")  # fmt: skip
    p.set_defaults(run=cmd_split)
    return parser


# -- plugins -------------------------------------------------------------------------------------


def cmd_plugins(args: argparse.Namespace) -> int:
    registry = default_registry()
    listing = registry.listing()
    if args.json:
        plugins = [
            {"name": name, "distribution": o.distribution, "version": o.version, "builtin": o.builtin}
            for name, o in sorted(registry.plugins.items())
        ]
        _print_json({"families": listing, "plugins": plugins})
        return 0
    for family, entries in listing.items():
        print(f"{family}:")
        if not entries:
            print("  (none registered)")
        width = max((len(e["kind"]) for e in entries), default=0)
        for e in entries:
            origin = f"{e['distribution']} {e['version']}" if e["distribution"] else "registered in code"
            print(f"  {e['kind']:<{width}}  {origin} [{e['plugin']}]  {e['summary']}")
    return 0


# -- spec ----------------------------------------------------------------------------------------


def cmd_spec_check(args: argparse.Namespace) -> int:
    from aunet.core.spec import load_spec

    issues: list[str] = []
    for file in args.files:
        try:
            spec = load_spec(file)
            problems = spec.check_splitting()
            if problems:
                raise SpecError(problems, source=file)
        except AunetError as exc:
            issues.extend(exc.lines())
            continue
        kinds = ", ".join(level.splitter.kind for level in spec.levels[1:] if level.splitter) or "no pooling"
        print(f"{file}: ok ({len(spec.levels)} levels: {kinds})")
    if issues:
        raise AunetError("\n".join(issues))
    return 0


def cmd_spec_show(args: argparse.Namespace) -> int:
    from aunet.core.spec import dump_spec, load_spec, spec_to_dict

    spec = load_spec(args.file)
    problems = spec.check_splitting()
    if problems:
        raise SpecError(problems, source=args.file)
    if args.json:
        _print_json({"name": spec.name, "spec": spec_to_dict(spec)})
    else:
        print(dump_spec(spec), end="")
    return 0


# -- split ---------------------------------------------------------------------------------------


def _stack_from_kinds(text: str, registry: Registry) -> Any:
    from aunet.core.levels import SplitterStack

    kinds = [k.strip() for k in text.split(",")]
    if not all(kinds):
        raise InputError(f"--splitters: empty kind in '{text}'; give comma-separated kinds, e.g. whitespace,word-pair")
    known = registry.kinds(Family.SPLITTER)
    splitters = []
    for kind in kinds:
        if kind not in known:
            raise InputError(f"--splitters: unknown splitter '{kind}'; known: {known_list(known)}{did_you_mean(kind, known)}")
        try:
            splitters.append(known[kind].cls())
        except TypeError:
            raise InputError(f"--splitters: splitter '{kind}' needs options; give it in a spec file with --spec") from None
    stack = SplitterStack(tuple(splitters))
    problems = stack.check(path="--splitters")
    if problems:
        raise SpecError(problems)
    return stack


def read_input_file(path: str, *, what: str = "--file") -> bytes:
    """The bytes of a user-named file, or an InputError that says what is wrong."""
    p = Path(path)
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{what}: '{path}' does not exist") from None
    except IsADirectoryError:
        raise InputError(f"{what}: '{path}' is a directory; give a file") from None
    except PermissionError:
        raise InputError(f"{what}: '{path}' is not readable (permission denied)") from None
    except OSError as exc:
        raise InputError(f"{what}: cannot read '{path}': {exc.strerror or exc}") from None


def cmd_split(args: argparse.Namespace) -> int:
    from aunet.core.levels import segment_stats
    from aunet.core.spec import load_spec

    registry = default_registry()
    if args.spec:
        spec = load_spec(args.spec, registry=registry)
        problems = spec.check_splitting()
        if problems:
            raise SpecError(problems, source=args.spec)
        stack = spec.splitter_stack()
    else:
        stack = _stack_from_kinds(args.splitters, registry)
    data = args.text.encode("utf-8", "surrogateescape") if args.text is not None else read_input_file(args.file)
    levels = stack.levels(data)
    stats = segment_stats(levels, stack.depth)
    kinds = [s.kind for s in stack.splitters]
    if args.json:
        _print_json({
            "n_bytes": len(data),
            "splitters": kinds,
            "levels": levels.tolist(),
            "segments": list(stats.segments),
            "bytes_per_segment": [round(x, 4) for x in stats.bytes_per_segment],
        })  # fmt: skip
        return 0
    print(f"{len(data):,} bytes")
    for i, kind in enumerate(kinds, start=1):
        print(f"level {i} ({kind}): {stats.segments[i - 1]:,} segments, {stats.bytes_per_segment[i - 1]:.2f} bytes per segment")
    shown = data[: max(args.show, 0)]
    if len(shown) < len(data):
        print(f"(drawing the first {len(shown):,} of {len(data):,} bytes; --show N draws more, --json gives every level)")
    for i in range(1, stack.depth + 1):
        print(f"\nlevel {i} ({kinds[i - 1]}), '|' after each boundary:")
        print(render_segments(shown, levels[: len(shown)], i))
    return 0


_VISIBLE = {0x0A: "⏎\n", 0x0D: "␍", 0x09: "→"}


def render_segments(data: bytes, levels: Any, level: int) -> str:
    """The text with '|' after every boundary of ``level`` or higher; line breaks drawn as ⏎,
    tabs as →, other control characters and invalid bytes as \\xNN."""
    out: list[str] = []
    start = 0
    cuts = [i + 1 for i, lv in enumerate(levels.tolist()) if lv >= level]
    for end in [*cuts, len(data)]:
        if end > start:
            out.append(_visible(data[start:end]))
            if end in cuts:
                out.append("|")
        start = end
    return "".join(out)


def _visible(chunk: bytes) -> str:
    text = chunk.decode("utf-8", "backslashreplace")
    return "".join(_VISIBLE.get(ord(c), f"\\x{ord(c):02x}" if ord(c) < 0x20 or ord(c) == 0x7F else c) for c in text)


def _print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")


Command = Callable[[argparse.Namespace], int]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
