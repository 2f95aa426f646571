"""The splitter kit: properties every splitter (built-in or third-party) must have, and the
hypothesis strategies behind them. Needs ``hypothesis`` (``pip install aunet[test]``).

    from aunet.testing import check_splitter
    check_splitter(MySplitter())          # raises AssertionError with a reproducible example

The properties (docs/method.md section 2): on any bytes the levels are total (one level per byte, no
exception) and deterministic; the batch form equals the streaming form fed one byte at a time
and in chunks of any size; levels are prefix-stable (the levels of ``data[:c]`` are the first
``c`` levels of ``data``); no boundary falls inside a valid multi-byte character; levels nest.

**Inputs that find bugs.** Splitting rules go wrong where characters of one class come in runs
("..." against "."), where one class gives way to another, and at classes a random text seldom
draws. So most inputs are built from the splitter's own character table (``class_runs``): runs
of 1 to 4 characters of one class, from every class the table distinguishes, with a few
representatives each (ASCII ones first); the rest are random bytes, mixed-script text and broken
UTF-8 (``any_bytes``). With hypothesis's default 100 examples a splitter whose batch form treats
a run of terminators otherwise than its machine is caught in every fresh run (tests/test_kits.py
runs each kit's mutants 20 times, outside the project's settings).

**Settings for plugin authors.** The kit runs at whatever hypothesis profile is loaded, so a
test suite's profile applies; the default (100 examples, random seeds) is enough to catch the
mutants above. Before a release, load a thorough profile in your ``conftest.py``::

    from hypothesis import settings
    settings.register_profile("thorough", max_examples=1000, deadline=None)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

and in CI a derandomized one (``derandomize=True``), so that a failure reproduces.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from aunet.core.levels import SplitterStack
from aunet.core.splitter import Splitter
from aunet.core.text import INVALID, CharTable

#: Inputs are at most this many bytes: the one constant that bounds every generated example.
MAX_BYTES = 256

#: Characters that exercise every rule: letters and digits of several scripts, combining marks
#: and viramas, punctuation runs, every kind of whitespace and line break, wide and astral
#: characters, joiners.
ALPHABET = (
    "abcXYZ019 .,;:!?-'\"()—…“”«»\t\n\r\x0b\x0c\x85\u00a0\u2028\u3000"
    "éßжЖ中文字日本語のカタカナ한국어ไทยภาษาअनुच्छेदक्षالعَرَبِيَّة٣٤۵"
    "\u0301\u200d\u200b😀👩\u200d💻🇫🇷"
)
#: More scripts and every cluster mechanism: Khmer and Myanmar stacking, Tibetan tsheg, Ethiopic
#: wordspace, conjoining Hangul jamo, a prepended character, Thai tone marks and following vowels,
#: Malayalam conjuncts, skin-tone modifiers.
SCRIPT_ALPHABET = ALPHABET + (
    "กินข้าวน้ำที่ค่ะๆา ខ្មែរ្ក មន្ត្រី မြန်မာ့း ་བོད། ሰላም፡ክቡር ്ൽമലയാളം ँंः़ \u1100\u1161\u11a8\u0600ー々かなカナ한국 👍🏽"
)


def texts(max_bytes: int = MAX_BYTES, alphabet: str = ALPHABET) -> Any:
    """Mixed-script text, UTF-8 encoded."""
    from hypothesis import strategies as st

    return st.text(alphabet=alphabet, max_size=max_bytes // 3).map(lambda s: s.encode("utf-8"))


def any_bytes(max_bytes: int = MAX_BYTES, alphabet: str = ALPHABET) -> Any:
    """Arbitrary bytes: random binary, mixed-script text, and text with bytes cut out, inserted or
    truncated (so lead bytes without continuations, lone continuations, overlongs, surrogates)."""
    from hypothesis import strategies as st

    def corrupt(draw: Any) -> bytes:
        data = bytearray(draw(texts(max_bytes, alphabet)))
        for _ in range(draw(st.integers(0, 4))):
            op = draw(st.sampled_from(["insert", "delete", "truncate"]))
            pos = draw(st.integers(0, len(data)))
            if op == "insert":
                data[pos:pos] = draw(st.binary(min_size=1, max_size=3))
            elif op == "delete" and pos < len(data):
                del data[pos]
            else:
                del data[pos:]
        return bytes(data[:max_bytes])

    return st.one_of(st.binary(max_size=max_bytes), texts(max_bytes, alphabet), st.composite(corrupt)())


#: Representatives drawn per character class (ASCII ones first, then others spread over the class).
REPRESENTATIVES = 6


@functools.lru_cache(maxsize=32)
def class_representatives(table: CharTable) -> tuple[tuple[bytes, ...], ...]:
    """For every class of ``table`` that has members, a few of its characters as UTF-8 (an
    invalid byte for the class of ``INVALID``)."""
    codes = table.table
    order = np.argsort(codes, kind="stable")  # code points grouped by class, ascending within each
    bounds = np.searchsorted(codes[order], np.arange(table.n_classes + 1))
    out = []
    for c in range(table.n_classes):
        members = order[bounds[c] : bounds[c + 1]]
        members = members[(members < 0xD800) | (members > 0xDFFF)]  # surrogates have no UTF-8 form
        reps: list[bytes] = [b"\xff"] if (members == INVALID).any() else []
        members = members[members != INVALID]
        picked = [*members[members < 0x80][:REPRESENTATIVES]]
        rest = members[members >= 0x80]
        if len(rest):  # the first few, and some spread over the class (the same ones every time)
            spread = np.random.default_rng(c).choice(rest, min(len(rest), REPRESENTATIVES), replace=False)
            picked += [*rest[:3], *np.sort(spread)]
        reps += [chr(int(cp)).encode("utf-8") for cp in dict.fromkeys(int(p) for p in picked)]
        if reps:
            out.append(tuple(reps))
    return tuple(out)


def class_runs(tables: Sequence[CharTable], max_bytes: int = MAX_BYTES) -> Any:
    """Texts built from runs of characters of one class (1 to 4 of them, the same character or
    several), class after class, over every class the given tables distinguish: where splitting
    rules break (runs of terminators, a class giving way to another, rare classes)."""
    from hypothesis import strategies as st

    groups = [reps for table in dict.fromkeys(tables) for reps in class_representatives(table)]

    @st.composite
    def draw(draw: Any) -> bytes:
        out = bytearray()
        for _ in range(draw(st.integers(1, 24))):
            reps = draw(st.sampled_from(groups))
            length = draw(st.integers(1, 4))
            if draw(st.booleans()):
                out += draw(st.sampled_from(reps)) * length
            else:
                for _ in range(length):
                    out += draw(st.sampled_from(reps))
            if len(out) >= max_bytes:
                break
        return bytes(out[:max_bytes])

    return draw()


def splitter_inputs(splitters: Sequence[Splitter], max_bytes: int = MAX_BYTES) -> Any:
    """What the splitter kit feeds: mostly ``class_runs`` over the splitters' tables, and
    ``any_bytes`` (random binary, mixed-script text, broken UTF-8)."""
    from hypothesis import strategies as st

    runs = class_runs([s.char_table() for s in splitters], max_bytes)
    return st.one_of(runs, runs, any_bytes(max_bytes, alphabet=SCRIPT_ALPHABET))


def valid_char_inner_bytes(data: bytes) -> list[int]:
    """Positions of bytes inside valid multi-byte characters, other than their last byte, found
    by Python's own decoder (an oracle independent of ``aunet.core.text``)."""
    inner = []
    pos = 0
    for ch in data.decode("utf-8", "surrogateescape"):
        if 0xDC80 <= ord(ch) <= 0xDCFF:  # an undecodable byte, escaped one byte at a time
            pos += 1
            continue
        n = len(ch.encode("utf-8"))
        inner.extend(range(pos, pos + n - 1))
        pos += n
    return inner


def assert_levels_consistent(stack: SplitterStack, data: bytes, chunk_sizes: Sequence[int] = (1, 2, 3, 7)) -> None:
    """Every property on one input; AssertionError naming the input and the first difference."""
    where = f"stack {[s.kind for s in stack.splitters]} on {data!r}"
    levels = stack.levels(data)
    assert isinstance(levels, np.ndarray) and levels.dtype == np.uint8, f"{where}: levels must be uint8"
    assert levels.shape == (len(data),), f"{where}: {levels.shape} levels for {len(data)} bytes"
    assert int(levels.max(initial=0)) <= stack.depth, f"{where}: level above the top ({stack.depth})"
    again = stack.levels(data)
    assert np.array_equal(levels, again), f"{where}: not deterministic"

    stream = stack.stream()
    pushed = np.array([stream.push(b) for b in data], dtype=np.uint8)
    _assert_equal(levels, pushed, f"{where}: streaming byte by byte differs from batch")
    assert stream.pending_bytes <= 3, f"{where}: stream holds {stream.pending_bytes} pending bytes"
    for size in chunk_sizes:
        stream = stack.stream()
        fed = [stream.feed(data[i : i + size]) for i in range(0, len(data), size)]
        chunked = np.concatenate(fed) if fed else np.zeros(0, np.uint8)
        _assert_equal(levels, chunked, f"{where}: streaming in chunks of {size} differs from batch")

    # Every cut of short inputs; for longer ones 64 cuts spread over the input (and the streaming
    # check above already covers every prefix: the stream decides each byte from its past).
    cuts = (
        range(len(data))
        if len(data) <= 64
        else sorted({*range(0, len(data), max(1, len(data) // 48)), *range(len(data) - 16, len(data))})
    )
    for cut in cuts:
        prefix = stack.levels(data[:cut])
        _assert_equal(levels[:cut], prefix, f"{where}: not prefix-stable at cut {cut}")

    inner = valid_char_inner_bytes(data)
    bad = [p for p in inner if levels[p]]
    assert not bad, f"{where}: boundary inside a valid multi-byte character at bytes {bad}"


def _assert_equal(expected: np.ndarray, got: np.ndarray, message: str) -> None:
    if not np.array_equal(expected, got):
        diff = np.flatnonzero(expected != got) if len(expected) == len(got) else [min(len(expected), len(got))]
        i = int(diff[0])
        raise AssertionError(
            f"{message}: first difference at byte {i}: expected {expected[i : i + 1].tolist()}, got {got[i : i + 1].tolist()}"
        )


def check_splitter(
    splitter: Splitter,
    *,
    stacks: Sequence[Sequence[Splitter]] | None = None,
    max_examples: int | None = None,
    shrink: bool = True,
    max_bytes: int = MAX_BYTES,
) -> None:
    """Run the properties with hypothesis on ``splitter`` alone (and in any given ``stacks``);
    ``shrink=False`` reports the first failing input found instead of a shrunk one. ``max_bytes``
    bounds the inputs below ``MAX_BYTES``, for a splitter whose every byte costs a model's step
    (the entropy splitter)."""
    from hypothesis import Phase, given, settings

    candidates = [SplitterStack((splitter,))] + [SplitterStack(tuple(s)) for s in (stacks or ())]

    @given(data=splitter_inputs([s for stack in candidates for s in stack.splitters], min(max_bytes, MAX_BYTES)))
    def run(data: bytes) -> None:
        for stack in candidates:
            assert_levels_consistent(stack, data)

    if max_examples is not None:
        run = settings(max_examples=max_examples)(run)
    if not shrink:
        run = settings(phases=[p for p in Phase if p is not Phase.shrink])(run)
    run()
