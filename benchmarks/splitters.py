"""Splitter throughput on the embedded English corpus (World English Bible, 4.9 MB).

For the 1-, 2- and 3-level stacks of the word splitters and of the script splitters, four ways
of splitting, all timed interleaved:
  batch            the whole corpus as one document (the vectorized path),
  batch-chapters   one call per chapter (~1,200 documents of ~4 KB: per-call overhead included),
  stream-bytes     the streaming splitter fed one byte at a time (push), what generation does,
  stream-chunks    the streaming splitter fed 4 KB chunks (feed).
One core: numpy runs these single-threaded.
"""

from __future__ import annotations

import re
from typing import Any

from benchmarks.timing import interleaved, median

STACKS = {
    "whitespace": ("whitespace",),
    "whitespace+word-pair": ("whitespace", "word-pair"),
    "whitespace+word-pair+4-word": ("whitespace", "word-pair", "4-word"),
    "script": ("script",),
    "script+script-pair": ("script", "script-pair"),
    "script+script-pair+script-4": ("script", "script-pair", "script-4"),
}
STREAM_BYTES = 1_000_000  # streaming is timed on the first megabyte


def run(rounds: int = 9, smoke: bool = False) -> list[dict[str, Any]]:
    """``smoke``: a tenth of the corpus, to check the benchmark runs (the figures mean little)."""
    from aunet.core.levels import SplitterStack
    from aunet.core.registry import Family, default_registry
    from aunet.core.resources import read_corpus

    registry = default_registry()
    kinds = registry.kinds(Family.SPLITTER)
    corpus = read_corpus("en_web")
    if smoke:
        corpus = corpus[: corpus.find(b"\n", len(corpus) // 10) + 1]
    chapters = [m.group(0) for m in re.finditer(rb"(?ms)^[^\n]+ \d+\n.*?(?=^[^\n]+ \d+\n|\Z)", corpus)]
    assert sum(map(len, chapters)) == len(corpus), "chapters must tile the corpus"
    stream_data = corpus[:STREAM_BYTES]

    configs = {}
    sizes = {}
    for name, stack_kinds in STACKS.items():
        stack = SplitterStack(tuple(kinds[k].cls() for k in stack_kinds))
        stack.stream()  # compile outside the timing

        def stream_bytes(stack=stack) -> None:
            push = stack.stream().push
            for b in stream_data:
                push(b)

        def stream_chunks(stack=stack) -> None:
            stream = stack.stream()
            for i in range(0, len(stream_data), 4096):
                stream.feed(stream_data[i : i + 4096])

        configs[(name, "batch")] = lambda stack=stack: stack.levels(corpus)
        configs[(name, "batch-chapters")] = lambda stack=stack: [stack.levels(c) for c in chapters]
        configs[(name, "stream-bytes")] = stream_bytes
        configs[(name, "stream-chunks")] = stream_chunks
        sizes.update(
            {
                (name, "batch"): len(corpus),
                (name, "batch-chapters"): len(corpus),
                (name, "stream-bytes"): len(stream_data),
                (name, "stream-chunks"): len(stream_data),
            }
        )

    times = interleaved(configs, rounds=rounds)
    records = []
    for (name, mode), ts in times.items():
        seconds = median(ts)
        records.append(
            {
                "stack": name,
                "levels": len(STACKS[name]),
                "mode": mode,
                "bytes": sizes[(name, mode)],
                "median_s": round(seconds, 5),
                "mb_per_s": round(sizes[(name, mode)] / seconds / 1e6, 2),
                "rounds": rounds,
            }
        )
    return records


def report(records: list[dict[str, Any]]) -> str:
    lines = [f"{'stack':<30} {'mode':<16} {'MB/s':>8}"]
    for r in records:
        lines.append(f"{r['stack']:<30} {r['mode']:<16} {r['mb_per_s']:>8.2f}")
    return "\n".join(lines)
