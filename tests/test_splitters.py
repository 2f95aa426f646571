"""The word splitters: the reference vectors, an independent oracle, and the properties every
splitter must have (docs/method.md section 2)."""

from __future__ import annotations

import json
import lzma
import unicodedata

import numpy as np
import pytest
from hypothesis import given

from aunet.core.levels import SplitterStack, segment_stats
from aunet.core.text import WHITE_SPACE
from aunet.splitters.words import FourWord, NWord, Whitespace, WordPair
from aunet.testing import ALPHABET, any_bytes, assert_levels_consistent, texts

from conftest import DATA

HIERARCHIES = {
    "whitespace": (Whitespace(),),
    "whitespace+word-pair": (Whitespace(), WordPair()),
    "whitespace+word-pair+4-word": (Whitespace(), WordPair(), FourWord()),
}
STACKS = [SplitterStack(s) for s in HIERARCHIES.values()] + [
    SplitterStack((Whitespace(), WordPair(), FourWord(), NWord(n=8))),
    SplitterStack((WordPair(),)),
]


def _vectors() -> list[dict]:
    with lzma.open(DATA / "reference-word-levels.json.xz", "rt", encoding="utf-8") as f:
        return json.load(f)["cases"]


VECTORS = _vectors()


@pytest.mark.parametrize("hierarchy", sorted(HIERARCHIES))
def test_every_reference_vector_matches(hierarchy: str) -> None:
    stack = SplitterStack(HIERARCHIES[hierarchy])
    cases = [c for c in VECTORS if c["hierarchy"] == hierarchy]
    assert len(cases) == 500
    for i, case in enumerate(cases):
        data = case["text"].encode("utf-8")
        expected = case["expected_levels"]
        assert stack.levels(data).tolist() == expected, f"batch, case {i}: {case['text']!r}"
        stream = stack.stream()
        assert [stream.push(b) for b in data] == expected, f"streaming, case {i}: {case['text']!r}"


def test_vectors_differ_from_reference_only_where_the_reference_is_unstable_or_newline_rule() -> None:
    # The prefix-stable newline rule moves the reference's mark from the first character of a
    # whitespace run to its first line break: every difference must be at such a run.
    for case in VECTORS:
        data = case["text"].encode("utf-8")
        diff = [i for i, (a, b) in enumerate(zip(case["reference_levels"], case["expected_levels"])) if a != b]
        for i in diff:
            assert data[i : i + 1].isspace() or i in case["reference_unstable_positions"], (case["text"], i)


# -- an independent oracle: the rules of docs/method.md section 2, one character at a time -------------

_WS = {chr(c) for c in WHITE_SPACE}


def _oracle_class(ch: str) -> str:
    if ch in "\n\r":
        return "N"
    if ch in _WS:
        return "W"
    if 0xDC80 <= ord(ch) <= 0xDCFF:  # an invalid byte (surrogateescape): a symbol
        return "S"
    cat = unicodedata.category(ch)
    return "L" if cat[0] == "L" else "D" if cat[0] == "N" else "S"


def oracle_levels(data: bytes, groups: tuple[int, ...]) -> list[int]:
    """Straight from the text of the rules (valid UTF-8 only: it decodes with Python)."""
    top = len(groups)
    chars = data.decode("utf-8")
    out: list[int] = []
    units_in_chain = 0
    prev = None
    chain_alive = False  # the previous unit's boundary was the character just before this word
    run = 0
    swallowing = False
    newline_marked = False
    for ch in chars:
        c = _oracle_class(ch)
        level = 0
        if c in "LDS":
            if prev in (None, "W", "N") and not chain_alive:  # a word starts, and no chain goes on
                units_in_chain = 0
            run = run + 1 if c == prev and c != "L" else 0
            if c != "L" and run % 3 == 0:
                level = top
            swallowing = c == "S"
            newline_marked = False
            chain_alive = False
        else:
            if prev in ("L", "D", "S"):  # this whitespace ends a unit
                units_in_chain += 1
                for i, n in enumerate(groups, start=1):
                    if units_in_chain % n == 0:
                        level = max(level, i)
                chain_alive = True
            else:
                chain_alive = False
            if c == "N" and swallowing:
                pass
            else:
                swallowing = False
                if c == "N" and not newline_marked:
                    level = top
                    newline_marked = True
        out.extend([0] * (len(ch.encode("utf-8")) - 1) + [level])
        prev = c
    return out


@given(data=texts())
def test_levels_equal_the_oracle_on_mixed_script_text(data: bytes) -> None:
    for groups, stack in [((1,), STACKS[0]), ((1, 2), STACKS[1]), ((1, 2, 4), STACKS[2]), ((1, 2, 4, 8), STACKS[3])]:
        assert stack.levels(data).tolist() == oracle_levels(data, groups), data


@pytest.mark.parametrize("stack", STACKS, ids=lambda s: "+".join(x.kind for x in s.splitters))
@given(data=any_bytes())
def test_properties_on_any_bytes(stack: SplitterStack, data: bytes) -> None:
    assert_levels_consistent(stack, data)


@pytest.mark.parametrize("stack", STACKS[1:4], ids=lambda s: "+".join(x.kind for x in s.splitters))
@given(data=any_bytes())
def test_levels_nest(stack: SplitterStack, data: bytes) -> None:
    # The boundaries of level i of the whole stack are those of the stack of its first i
    # splitters alone (its top level): a splitter above never marks what the one below does not.
    levels = stack.levels(data)
    below = None
    for i in range(1, stack.depth + 1):
        alone = np.flatnonzero(SplitterStack(stack.splitters[:i]).levels(data) == i)
        assert np.array_equal(np.flatnonzero(levels >= i), alone), (i, data)
        if below is not None:  # nesting: every level-i boundary is a boundary of level i - 1
            assert np.isin(alone, below).all(), (i, data)
        below = alone


def test_paper_example() -> None:
    data = b"The cat sat on the mat"
    levels = STACKS[2].levels(data)
    marked = {i: int(v) for i, v in enumerate(levels) if v}
    # Level-1 boundaries at the space after each word; word pairs after "cat" and "on"; the
    # 4-word group after "on".
    assert marked == {3: 1, 7: 2, 11: 1, 14: 3, 18: 1}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12345", [3, 0, 0, 3, 0]),  # digit pieces of at most 3: "1", "4"
        ("a...!?b", [0, 3, 0, 0, 3, 0, 0]),  # symbol pieces
        ("a.\n\nb", [0, 3, 1, 0, 0]),  # line breaks after a symbol are swallowed (the first still ends a unit)
        ("a \n\n b", [0, 1, 3, 0, 0, 0]),  # first line break of the whitespace run
        ("a  b c", [0, 1, 0, 0, 1, 0]),  # extra whitespace breaks the chain (for pairs)
    ],
)
def test_rules_on_small_cases(text: str, expected: list[int]) -> None:
    assert STACKS[2].levels(text.encode()).tolist() == expected


def test_chains_restart_after_extra_whitespace() -> None:
    levels = SplitterStack((Whitespace(), WordPair())).levels(b"a b  c d e ")
    assert levels.tolist() == [0, 1, 0, 2, 0, 0, 1, 0, 2, 0, 1]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00" * 100,
        b"\x80\x81\xbf",  # lone continuation bytes
        b"\xe4\xb8",  # a truncated character at the end
        b"\xe4\xb8A\xe4\xb8\xad",  # truncated, then valid
        b"\xf0\x9f\x98",  # truncated emoji
        b"\xc0\xaf\xed\xa0\x80\xf4\x90\x80\x80\xff",  # overlong, surrogate, above U+10FFFF, 0xFF
        "，。！？".encode() * 5,
    ],
)
def test_total_and_consistent_on_edge_inputs(data: bytes) -> None:
    for stack in STACKS:
        assert_levels_consistent(stack, data)


def test_truncated_sequences_are_never_boundaries() -> None:
    # "\xe4\xb8" looked like the start of a character when it arrived: its level was decided
    # (0) before the sequence broke, so batch must agree even though it sees the whole input.
    stack = STACKS[0]
    levels = stack.levels(b"..\xe4\xb8 x")
    assert levels.tolist()[2:4] == [0, 0]
    assert levels[4] == 1  # the space still ends the unit "..\xe4\xb8"


def test_ten_megabytes_without_a_space() -> None:
    data = (b"abcdefghij" * 1_000_000)[:10_000_000]
    levels = STACKS[2].levels(data)
    assert levels.shape == (10_000_000,) and not levels.any()
    stream = STACKS[2].stream()
    chunk = data[:200_000]
    assert not stream.feed(chunk).any()
    assert stream.pending_bytes == 0


def test_stream_memory_is_bounded() -> None:
    stream = STACKS[2].stream()
    for b in "中".encode()[:2] * 3:  # a run of truncated sequences
        stream.push(b)
        assert stream.pending_bytes <= 3
    assert "tabulated" in stream.info


def test_stream_rejects_values_that_are_not_bytes() -> None:
    stream = STACKS[0].stream()
    with pytest.raises(ValueError, match="0..255"):
        stream.push(256)
    with pytest.raises(ValueError, match="0..255"):
        stream.push(-1)


def test_segment_stats() -> None:
    levels = STACKS[1].levels(b"The cat sat on")
    stats = segment_stats(levels, 2)
    assert stats.segments == (4, 2)  # "The |cat |sat |on" and "The cat |sat on"
    assert stats.bytes_per_segment == (14 / 4, 14 / 2)


def test_alphabet_covers_every_word_class() -> None:
    classes = {_oracle_class(ch) for ch in ALPHABET}
    assert classes == {"L", "D", "S", "W", "N"}


def test_stream_steps_the_machines_when_the_table_is_full(monkeypatch: pytest.MonkeyPatch) -> None:
    from aunet.core import levels as levels_module

    stack = SplitterStack((Whitespace(), NWord(n=7)))  # a stack no other test compiles
    n_inputs = levels_module.Automaton(stack).n_inputs
    monkeypatch.setattr(levels_module, "MAX_TABLE_SLOTS", 128 + 3 * (128 + n_inputs))  # 3 states
    data = "Tabulated until full, then stepped: 123 ... \xe4 done.\n\n".encode() * 3
    stream = stack.stream()
    with pytest.warns(RuntimeWarning, match="steps the splitters directly"):
        pushed = [stream.push(b) for b in data]
    assert pushed == stack.levels(data).tolist()
    assert "steps the machines directly" in stream.info
