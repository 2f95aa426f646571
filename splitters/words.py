"""The paper's word splitters: ``whitespace``, ``word-pair``, ``4-word`` (docs/method.md section 2).

The rules, on the characters of one document (whitespace = Unicode White_Space, letter = \\p{L},
digit = \\p{N}, symbol = anything else, combining marks and invalid bytes included):

1. **Word ends.** A *unit* is a maximal run of non-whitespace characters followed by one
   whitespace character, which is the unit's boundary. Units *chain* while each starts right
   after the previous one (one whitespace character between words); extra whitespace breaks the
   chain. A splitter of group n marks every n-th unit of a chain, counted from the chain's start
   (``whitespace`` n=1, ``word-pair`` n=2, ``4-word`` n=4, ``n-word`` any n).
2. **Starts**, marked by every splitter, hence at the top level of a stack: (a) the first
   character of each piece of at most 3 in a run of digits; (b) the same for runs of symbols,
   where the line breaks (``\\n``, ``\\r``) directly after a symbol run are swallowed by it; (c)
   in a run of whitespace that contains a line break not swallowed by (b), its first such line
   break. (The reference marks the first character of that whitespace run instead, which is only
   known once the line break arrives: not prefix-stable. This is the project's stable rule.)

The batch form works on index subsets (unit ends, digits, symbols, line breaks): the only passes
over every character are the class lookup and two boolean comparisons, so a 3-level stack runs at
over 100 MB/s on English. The machine form tracks, with ``n`` the splitter's group:
``prev`` (class of the previous character), ``pos`` (chain index of the current word's unit
end, mod n, or of the next word's while in whitespace), ``run`` (position in a digit or symbol run,
mod 3), ``swallow`` (in line breaks right after a symbol run), ``marked`` (a line break of this
whitespace run is already marked).
"""

from __future__ import annotations

import functools
from typing import ClassVar

import attrs
import numpy as np

from aunet.core.splitter import Splitter
from aunet.core.text import CATEGORIES, NEWLINES, WHITE_SPACE, Chars, CharTable, general_category
from aunet.core.validators import between

# Character classes of the word rules. Non-whitespace classes come first: ``cls < SPACE``.
LETTER, DIGIT, SYMBOL, SPACE, NEWLINE = range(5)
START = 5  # the machine's "previous character" before the first one
CLASS_NAMES = ("letter", "digit", "symbol", "space", "newline")


def by_category(letter: int, digit: int, symbol: int) -> np.ndarray:
    """A class per code point from its Unicode general category: ``letter`` for L*, ``digit``
    for N*, ``symbol`` for the rest (``INVALID`` bytes included); the rules then refine it."""
    classes = np.full(len(CATEGORIES) + 1, symbol, dtype=np.uint8)  # +1: INVALID
    for i, name in enumerate(CATEGORIES):
        if name[0] == "L":
            classes[i] = letter
        elif name[0] == "N":
            classes[i] = digit
    return classes[general_category()]


@functools.cache
def word_classes() -> CharTable:
    """The class of every code point under the word rules (``INVALID`` is a symbol)."""
    table = by_category(LETTER, DIGIT, SYMBOL)
    table[list(WHITE_SPACE)] = SPACE
    table[list(NEWLINES)] = NEWLINE
    return CharTable("words", table, CLASS_NAMES)


def run_offsets(positions: np.ndarray) -> np.ndarray:
    """For sorted positions, each one's offset within its run of consecutive positions."""
    if len(positions) == 0:
        return positions
    new_run = np.empty(len(positions), dtype=bool)
    new_run[0] = True
    np.not_equal(positions[1:], positions[:-1] + 1, out=new_run[1:])
    k = np.arange(len(positions))
    return k - np.maximum.accumulate(np.where(new_run, k, 0))


@attrs.frozen
class WordAnalysis:
    """What all word splitters of a document share (computed once per document)."""

    unit_ends: np.ndarray  # (U,) character index of each unit's boundary
    chain_index: np.ndarray  # (U,) position of each unit in its chain, from 0
    starts: np.ndarray  # (K,) characters marked by rule 2 (every level)


def analyse(chars: Chars) -> WordAnalysis:
    """Rules 1 and 2 on a whole document, vectorized."""
    cls = chars.classes(word_classes())  # (M,)
    n = len(cls)
    ws = cls >= SPACE  # (M,)
    # Whitespace and words alternate, so the changes between them alternate too: a unit end (a
    # whitespace character right after a non-whitespace one), then a word start, and so on.
    changes = np.flatnonzero(ws[1:] != ws[:-1]) + 1
    first_is_end = n > 0 and not ws[0]
    unit_ends = changes[0 if first_is_end else 1 :: 2]  # (U,)
    word_starts = changes[1 if first_is_end else 0 :: 2]  # (W,) excluding a word at 0
    # Word j ends at unit end j; it continues the chain when the character before it is the
    # previous unit's boundary, i.e. a single whitespace character separates the two words.
    u = len(unit_ends)
    new_chain = np.ones(u, dtype=bool)
    # unit end j-1 is followed by the start of word j: word_starts[j-1] (word 0 may start at 0)
    following = word_starts if first_is_end else word_starts[1:]
    new_chain[1:] = following[: u - 1] != unit_ends[:-1] + 1
    chain_starts = np.flatnonzero(new_chain)
    chain_lengths = np.diff(np.append(chain_starts, u))
    chain_index = np.arange(u, dtype=np.int32) - np.repeat(chain_starts.astype(np.int32), chain_lengths)

    digits = np.flatnonzero(cls == DIGIT)
    symbols = np.flatnonzero(cls == SYMBOL)
    newlines = np.flatnonzero(cls == NEWLINE)
    digit_starts = digits[run_offsets(digits) % 3 == 0]
    symbol_starts = symbols[run_offsets(symbols) % 3 == 0]
    # A line break is swallowed when its run of line breaks directly follows a symbol.
    run_first = newlines - run_offsets(newlines)
    swallowed = (run_first > 0) & (cls[np.maximum(run_first - 1, 0)] == SYMBOL)
    free = newlines[~swallowed]
    # Mark the first free line break of each whitespace run: the first overall, then each one
    # with a word start between it and the previous free line break.
    words_before = np.searchsorted(word_starts, free)  # word starts at 0 shift nothing
    first = np.ones(len(free), dtype=bool)
    first[1:] = words_before[1:] != words_before[:-1]
    starts = np.concatenate([digit_starts, symbol_starts, free[first]])
    return WordAnalysis(unit_ends, chain_index, starts)


@attrs.frozen(kw_only=True)
class WordSplitter(Splitter):
    """Every n-th word of a chain, plus digit, symbol and line-break starts (docs/method.md section 2)."""

    n: int = attrs.field(default=1)
    granularity: ClassVar[int | None] = None

    def char_table(self) -> CharTable:
        return word_classes()

    def marks(self, chars: Chars) -> np.ndarray:
        words = chars.memo("words", lambda: analyse(chars))
        n = self.n
        ends = words.unit_ends if n == 1 else words.unit_ends[(words.chain_index + 1) % n == 0]
        return np.concatenate([ends, words.starts])

    # Machine state: (prev, pos, run, swallow, marked); fields that do not apply are kept at 0 so
    # that equal situations are equal states.
    def start(self) -> tuple[int, int, int, bool, bool]:
        return (START, 0, 0, False, False)

    def step(self, state: tuple[int, int, int, bool, bool], cls: int, nbytes: int):
        prev, pos, run, swallow, marked = state
        n = self.n
        if cls < SPACE:  # letter, digit or symbol: inside a word
            if cls == prev and cls != LETTER:
                run = (run + 1) % 3
            else:
                run = 0
            mark = cls != LETTER and run == 0
            return (cls, pos, run if cls != LETTER else 0, cls == SYMBOL, False), mark
        # Whitespace.
        mark = False
        if prev < SPACE:  # a unit ends here
            mark = (pos + 1) % n == 0
            pos = (pos + 1) % n
        else:  # extra whitespace (or whitespace at the start) breaks the chain
            pos = 0
        if cls == NEWLINE and swallow:
            return (NEWLINE, pos, 0, True, marked), mark
        if cls == NEWLINE and not marked:
            mark, marked = True, True
        return (cls, pos, 0, False, marked), mark


@attrs.frozen(kw_only=True)
class Whitespace(WordSplitter):
    """Word ends: the whitespace after each word (the paper's level 1, ``word1``)."""

    kind: ClassVar[str] = "whitespace"
    granularity: ClassVar[int | None] = 1
    n: int = attrs.field(default=1, init=False)


@attrs.frozen(kw_only=True)
class WordPair(WordSplitter):
    """Every second word of a chain (the paper's ``word2``)."""

    kind: ClassVar[str] = "word-pair"
    granularity: ClassVar[int | None] = 2
    n: int = attrs.field(default=2, init=False)


@attrs.frozen(kw_only=True)
class FourWord(WordSplitter):
    """Every fourth word of a chain (the paper's ``word4``)."""

    kind: ClassVar[str] = "4-word"
    granularity: ClassVar[int | None] = 4
    n: int = attrs.field(default=4, init=False)


#: Most words (or units) per segment an ``n``-splitter takes (its machine counts up to n).
MAX_UNITS = 1 << 16


@attrs.frozen(kw_only=True)
class NWord(WordSplitter):
    """Every n-th word of a chain, for hierarchies deeper than the paper's (8-word, ...)."""

    kind: ClassVar[str] = "n-word"
    n: int = attrs.field(validator=between(1, MAX_UNITS, why="2^16 words per segment"))
    """Words per segment: 1 is ``whitespace``, 2 ``word-pair``, 4 ``4-word``."""

    @property
    def granularity(self) -> int:  # type: ignore[override]
        return self.n
