"""``aunet split``: where a stack of splitters puts boundaries, drawn or as JSON."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

from aunet.cli.options import (
    Commands,
    number,
    print_json,
)
from aunet.core.errors import InputError, SpecError, did_you_mean, known_list
from aunet.core.hookspecs import hookimpl
from aunet.core.registry import Family, Registry, default_registry
from aunet.core.validators import MAX_COUNT
from aunet.jobs.inference.suites import suite_names
from aunet.jobs.runtime.files import input_file


@hookimpl
def aunet_add_commands(commands: Commands) -> None:
    p = commands.add_command("split", help="show where a stack of splitters puts boundaries")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--spec", metavar="FILE", help="use the splitters of this spec")
    src.add_argument("--splitters", metavar="KINDS", help="comma-separated splitter kinds, bottom level first")
    text = p.add_mutually_exclusive_group(required=True)
    text.add_argument("--text", metavar="STR", help="the text to split")
    text.add_argument("--file", metavar="PATH", help="a file to split (any bytes)")
    text.add_argument(
        "--suite",
        metavar="NAME",
        choices=suite_names(),
        help="report on every text of a suite instead (udhr: 525 languages)",
    )
    p.add_argument(
        "--only",
        metavar="NAMES",
        help="with --suite: only these texts (file stems or BCP 47 tags, comma-separated, e.g. eng,cmn_hans,tha)",
    )
    p.add_argument("--json", action="store_true", help="per-byte levels and statistics as JSON")
    p.add_argument(
        "--show",
        type=number(int, 0, strict=False, maximum=MAX_COUNT),
        default=2000,
        metavar="N",
        help="bytes of the text to draw in the human view (default 2000)",
    )
    p.set_defaults(run=cmd_split)


def _stack_from_kinds(text: str, registry: Registry) -> Any:
    from aunet.core.levels import SplitterStack

    kinds = [k.strip() for k in text.split(",")]
    if not all(kinds):
        raise InputError(f"--splitters: empty kind in '{text}'; give comma-separated kinds, e.g. whitespace,word-pair")
    known = registry.kinds(Family.SPLITTER)
    splitters = []
    for kind in kinds:
        if kind not in known:
            raise InputError(
                f"--splitters: unknown splitter '{kind}'; known: {known_list(known)}{did_you_mean(kind, known)}"
            )
        try:
            splitters.append(known[kind].cls())
        except TypeError:
            raise InputError(
                f"--splitters: splitter '{kind}' needs options; give it in a spec file with --spec"
            ) from None
    stack = SplitterStack(tuple(splitters))
    problems = stack.check(path="--splitters")
    if problems:
        raise SpecError(problems)
    return stack


#: ``aunet split --file`` splits files up to this size in one batch (fast; about 11 to 54 bytes of
#: memory per byte) and streams larger ones through the splitters' state machine in chunks, so
#: memory stays bounded whatever the size.
BATCH_SPLIT_BYTES = 8 << 20
SPLIT_CHUNK = 1 << 20


def _file_levels(stack: Any, path: Path, size: int, sink: Any) -> None:
    """Feed ``sink(data, levels)`` every chunk of the file's levels (one chunk when small)."""
    with open(path, "rb") as f:
        if size <= BATCH_SPLIT_BYTES:
            data = f.read()
            sink(data, stack.levels(data))
            return
        stream = stack.stream()
        while chunk := f.read(SPLIT_CHUNK):
            sink(chunk, stream.feed(chunk))


def cmd_split(args: argparse.Namespace) -> int:
    from aunet.core.levels import SegmentCounts
    from aunet.jobs.config import load_spec

    registry = default_registry()
    if args.spec:
        spec = load_spec(args.spec, registry=registry)
        problems = spec.check_splitting()
        if problems:
            raise SpecError(problems, source=args.spec)
        stack = spec.splitter_stack()
    else:
        stack = _stack_from_kinds(args.splitters, registry)
    if args.suite:
        return _split_suite(stack, args)
    if args.only:
        raise InputError("--only applies with --suite")
    kinds = [s.kind for s in stack.splitters]
    counts = SegmentCounts(stack.depth)
    show = max(args.show, 0)
    shown: list[tuple[bytes, np.ndarray]] = []
    shown_bytes = 0

    def keep_for_display(data: bytes, levels: np.ndarray) -> None:
        nonlocal shown_bytes
        counts.add(levels)
        if shown_bytes < show:
            take = show - shown_bytes
            shown.append((data[:take], levels[:take]))
            shown_bytes += min(take, len(data))

    if args.text is not None:
        data = args.text.encode("utf-8", "surrogateescape")
        path, size = None, len(data)
    else:
        path, size = input_file(args.file)
    if args.json:
        # Written as it is computed: a 100 MB file gives 100 million levels, never held at once.
        out = sys.stdout
        out.write(f'{{"n_bytes": {size}, "splitters": {json.dumps(kinds)}, "levels": [')
        first = True

        def emit(data: bytes, levels: np.ndarray) -> None:
            nonlocal first
            counts.add(levels)
            if len(levels):
                out.write(("" if first else ", ") + ", ".join(map(str, levels.tolist())))
                first = False

        if path is None:
            emit(data, stack.levels(data))
        else:
            _file_levels(stack, path, size, emit)
        stats = counts.stats()
        out.write(
            f'], "segments": {json.dumps(list(stats.segments))}, '
            f'"bytes_per_segment": {json.dumps([round(x, 4) for x in stats.bytes_per_segment])}}}\n'
        )
        return 0
    if path is None:
        keep_for_display(data, stack.levels(data))
    else:
        _file_levels(stack, path, size, keep_for_display)
    stats = counts.stats()
    print(f"{stats.n_bytes:,} bytes")
    for i, kind in enumerate(kinds, start=1):
        print(
            f"level {i} ({kind}): {stats.segments[i - 1]:,} segments, {stats.bytes_per_segment[i - 1]:.2f} bytes per segment"
        )
    head = b"".join(d for d, _ in shown)
    head_levels = np.concatenate([lv for _, lv in shown]) if shown else np.zeros(0, np.uint8)
    if len(head) < stats.n_bytes:
        print(
            f"(drawing the first {len(head):,} of {stats.n_bytes:,} bytes; --show N draws more, --json gives every level)"
        )
    for i in range(1, stack.depth + 1):
        print(f"\nlevel {i} ({kinds[i - 1]}), '|' after each boundary:")
        print(render_segments(head, head_levels, i))
    return 0


def _split_suite(stack: Any, args: argparse.Namespace) -> int:
    from aunet.jobs.inference.suites import LONG_BYTES, split_suite, suite_texts

    stats = split_suite(stack, suite_texts(args.suite, args.only))
    kinds = [s.kind for s in stack.splitters]
    if args.json:
        print_json({"suite": args.suite, "splitters": kinds, "languages": [s.to_json() for s in stats]})
        return 0
    depth = stack.depth
    head = " ".join(f"{'L' + str(i) + ' B/seg':>9}" for i in range(1, depth + 1))
    print(f"{'file':<22} {'language':<34} {head} {'>' + str(LONG_BYTES) + 'B':>7} {'in cluster':>10}")
    for s in stats:
        cells = " ".join(f"{k:>9.2f}" for k in s.bytes_per_segment)
        print(
            f"{s.text.file:<22} {s.text.name[:34]:<34} {cells} {100 * s.long_share:>6.1f}% {100 * s.inside_share:>9.1f}%"
        )
    if depth:
        means = [s.bytes_per_segment[0] for s in stats]
        print(
            f"\n{len(stats)} texts; level-1 bytes per segment from {min(means):.2f} to {max(means):.2f}; "
            f"{sum(s.long_share > 0.01 for s in stats)} with more than 1% of level-1 segments over {LONG_BYTES} bytes; "
            f"mean share of boundaries inside a grapheme cluster {100 * statistics.fmean(s.inside_share for s in stats):.2f}%"
        )
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
