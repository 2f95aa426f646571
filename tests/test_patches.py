"""MEGABYTE's fixed patches and SpaceByte's spacelike boundaries as splitters: their values, and
the splitter kit (total, prefix-stable, batch equals streaming, UTF-8 safe, nested in stacks)."""

from __future__ import annotations

import pytest

from aunet.core.errors import SpecError
from aunet.core.levels import SplitterStack
from aunet.jobs.config import parse_spec
from aunet.splitters.patches import Fixed, Spacelike
from aunet.splitters.words import Whitespace, WordPair
from aunet.testing.splitters import check_splitter


def levels(splitters, data: bytes) -> list[int]:
    return SplitterStack(tuple(splitters)).levels(data).tolist()


def test_fixed_patches_count_characters_never_cutting_one() -> None:
    assert levels([Fixed(every=3)], b"abcdefg") == [0, 0, 1, 0, 0, 1, 0]
    # "é" is two bytes and one character: its patch ends on its last byte.
    assert levels([Fixed(every=2)], "aébc".encode()) == [0, 0, 1, 0, 1]
    assert levels([Fixed(every=2), Fixed(every=4)], b"abcdefgh") == [0, 1, 0, 2, 0, 1, 0, 2]


def test_spacelike_boundaries_are_spacebytes_rule() -> None:
    # A spacelike character after a letter or digit ends a segment; a run of them, once.
    assert levels([Spacelike()], b"ab, cd") == [0, 0, 1, 0, 0, 0]
    assert levels([Spacelike()], b"x1 y2\n\nz") == [0, 0, 1, 0, 0, 1, 0, 0]
    # Every non-ASCII character is spacelike (SpaceByte's lead-byte rule, read per character).
    assert levels([Spacelike()], "aéb".encode()) == [0, 0, 1, 0]
    assert levels([Spacelike()], b" a") == [1, 0]  # the document's start counts as a word end


def test_specs_name_them_with_their_options_checked() -> None:
    spec = parse_spec('[[levels]]\n[[levels]]\nsplitter = { kind = "fixed", every = 6 }\n')
    assert spec.levels[1].splitter == Fixed(every=6)
    with pytest.raises(SpecError, match=r"levels\[1\]\.splitter\.every: must be at least 1, got 0"):
        parse_spec('[[levels]]\n[[levels]]\nsplitter = { kind = "fixed", every = 0 }\n')
    assert parse_spec('[[levels]]\n[[levels]]\nsplitter = "spacelike"\n').levels[1].splitter == Spacelike()


@pytest.mark.parametrize("every", [1, 3, 8])
def test_fixed_passes_the_splitter_kit(every: int) -> None:
    check_splitter(Fixed(every=every), stacks=[[Fixed(every=every), Fixed(every=4 * every)]], max_examples=60)


def test_spacelike_passes_the_splitter_kit() -> None:
    check_splitter(Spacelike(), stacks=[[Spacelike(), WordPair()], [Whitespace(), Spacelike()]], max_examples=60)
