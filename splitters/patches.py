"""The boundaries of two other hierarchical byte models, as splitters: MEGABYTE's fixed patches
(``fixed``) and SpaceByte's spacelike boundaries (``spacelike``).

**fixed.** Every ``every``-th character of a document ends a patch. MEGABYTE cuts every P bytes;
a splitter sees characters, never bytes (``aunet.core.splitter``), so a multi-byte character is
never cut in two: on ASCII text the two are the same, on other text a patch holds ``every``
characters (more bytes). Deeper levels take strides that divide each other (``fixed`` 4 below
``fixed`` 16): a level-2 boundary is then a level-1 one too, as MEGABYTE's nested patches are.

**spacelike.** SpaceByte's rule: a character is spacelike unless it is an ASCII letter or digit,
and a spacelike character ends a segment when the character before it is not spacelike, so a run
of spaces and punctuation gives one boundary, at its first character (a segment is then about a
word). SpaceByte reads bytes: the lead byte of a multi-byte character is spacelike and its
continuation bytes are not, which at the level of characters makes every non-ASCII character
spacelike, as here. Where the two differ: SpaceByte applies its global block at that lead byte,
while aunet's pooling reads a segment at its boundary character's last byte; and SpaceByte caps
the global blocks of a row and ignores the bytes past the cap, where aunet keeps a level's
boundaries up to its capacity and counts the ones it drops.

Both are total, prefix-stable by construction (their machines see only the past; the batch forms
agree with them: ``aunet.testing.check_splitter``), UTF-8 safe and vectorized.
"""

from __future__ import annotations

import functools
from typing import ClassVar

import attrs
import numpy as np

from aunet.core.splitter import Splitter
from aunet.core.text import TABLE_SIZE, Chars, CharTable, any_character
from aunet.core.validators import between

#: The longest fixed patch, in characters (the machine has one state per character of a patch).
MAX_PATCH = 1 << 12


@attrs.frozen(kw_only=True)
class Fixed(Splitter):
    """Every ``every``-th character ends a patch (MEGABYTE's fixed patches; module docstring)."""

    kind: ClassVar[str] = "fixed"

    every: int = attrs.field(default=8, validator=between(1, MAX_PATCH, why="4,096 characters per patch"))
    """Characters per patch (MEGABYTE's P; deeper levels take multiples of the level below)."""

    def char_table(self) -> CharTable:
        return any_character()

    def marks(self, chars: Chars) -> np.ndarray:
        n = len(chars.classes(any_character()))
        return np.arange(self.every - 1, n, self.every)

    def start(self) -> int:
        return 0  # characters of the current patch so far

    def step(self, state: int, cls: int, nbytes: int) -> tuple[int, bool]:
        seen = state + 1
        return (0, True) if seen == self.every else (seen, False)

    def describe(self) -> str:
        return f"every {self.every} characters (MEGABYTE's fixed patches)"


WORD, SPACELIKE = 0, 1


@functools.cache
def spacelike_classes() -> CharTable:
    """ASCII letters and digits are ``word``; every other character (and an invalid byte) is
    ``spacelike``."""
    table = np.full(TABLE_SIZE, SPACELIKE, dtype=np.uint8)
    for first, last in ((ord("0"), ord("9")), (ord("A"), ord("Z")), (ord("a"), ord("z"))):
        table[first : last + 1] = WORD
    return CharTable("spacelike", table, ("word", "spacelike"))


@attrs.frozen(kw_only=True)
class Spacelike(Splitter):
    """A spacelike character after a non-spacelike one (SpaceByte's rule; module docstring)."""

    kind: ClassVar[str] = "spacelike"
    granularity: ClassVar[int | None] = 1

    def char_table(self) -> CharTable:
        return spacelike_classes()

    def marks(self, chars: Chars) -> np.ndarray:
        spacelike = chars.classes(spacelike_classes()) == SPACELIKE  # (M,)
        marks = spacelike.copy()
        marks[1:] &= ~spacelike[:-1]
        return marks

    def start(self) -> bool:
        return False  # the character before was spacelike

    def step(self, state: bool, cls: int, nbytes: int) -> tuple[bool, bool]:
        spacelike = cls == SPACELIKE
        return spacelike, spacelike and not state


__all__ = ["MAX_PATCH", "Fixed", "Spacelike", "any_character", "spacelike_classes"]
