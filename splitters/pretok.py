"""The reference's other splitting strategies: ``pretok`` (pre-tokenizer pieces) and ``punct``
(phrases ending at punctuation).

**pretok.** The pieces BPE tokenizers cut text into before merging bytes, with the GPT-4 /
Llama 3 pre-tokenization pattern::

    '(?i:[sdmt]|ll|ve|re) | [^\\r\\n\\p{L}\\p{N}]?\\p{L}+ | \\p{N}{1,3} | ' ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*'
    | \\s*[\\r\\n]+ | \\s+(?!\\S) | \\s+

and a boundary at the first character of every piece, as the word rules mark the space that
starts " cat". Read as rules over characters (letter = \\p{L}, digit = \\p{N}, whitespace =
Unicode White_Space, line break = ``\\r`` or ``\\n``, symbol = anything else, combining marks and
invalid bytes included):

1. A letter run is a piece, joined to the one character before it when that character is a
   one-character piece so far: a lone space or tab (" cat"), or a lone symbol ("(cat", ".net").
2. After an apostrophe that starts a piece, ``s d m t`` and ``ll ve re`` (any case) complete a
   contraction ("don" "'t", "it" "'s"); a letter after a contraction starts a piece.
3. Digit runs are cut into pieces of at most 3 ("12345" -> "123" "45").
4. A symbol run is a piece, joined to a lone space before it (" ="), and followed by the line
   breaks right after it (".\\n").
5. A whitespace run is a piece.

The pattern is not prefix-stable where it looks ahead: in a run of two or more whitespace
characters, it gives the run's last character to the piece after it (" " " cat" for two spaces
and "cat"), and splits a run at its last line break, both known only once the run is over. The
stable reading used here keeps such a run whole and starts the next piece at the first character
after it ("  " "cat"). On text with single spaces between words the two agree everywhere (a test
holds them equal against the pattern itself).

**punct.** Phrase ends, for a level above the words: the whitespace character right after a
punctuation character (Unicode category P: "Hello," " world."), a full-width or ideographic
punctuation character itself (``，。、！？：；「」``: Chinese and Japanese put no space after them),
and the first line break of a whitespace run, as in the word rules. A segment is then a clause or
a sentence: about 30 to 40 bytes of English prose.

Both are total, prefix-stable by construction (their machines only see the past, and the batch
forms agree with them: ``aunet.testing.check_splitter``), UTF-8 safe and vectorized.
"""

from __future__ import annotations

import functools
from typing import ClassVar

import attrs
import numpy as np

from aunet.core.splitter import Splitter
from aunet.core.text import CATEGORIES, NEWLINES, WHITE_SPACE, Chars, CharTable, general_category
from aunet.splitters.words import by_category, run_offsets

# -- pretok ----------------------------------------------------------------------------------------

# Character classes. Letters first (cls <= L_OTHER), split by what contractions need.
L_SDMT, L_L, L_V, L_R, L_E, L_OTHER, DIGIT, APOSTROPHE, SYMBOL, SPACE, TAB, NEWLINE = range(12)
PRETOK_CLASS_NAMES = (
    "letter-sdmt",
    "letter-l",
    "letter-v",
    "letter-r",
    "letter-e",
    "letter",
    "digit",
    "apostrophe",
    "symbol",
    "space",
    "other-whitespace",
    "newline",
)
#: The second letter each two-letter contraction needs after its first (``'ll``, ``'ve``, ``'re``).
SECOND = {L_L: L_L, L_V: L_E, L_R: L_E}


@functools.cache
def pretok_classes() -> CharTable:
    """The class of every code point under the pre-tokenizer pattern (``INVALID`` is a symbol)."""
    table = by_category(L_OTHER, DIGIT, SYMBOL)
    for letters, cls in (("sdmt", L_SDMT), ("l", L_L), ("v", L_V), ("r", L_R), ("e", L_E)):
        table[[ord(c) for c in letters + letters.upper()]] = cls
    table[ord("'")] = APOSTROPHE
    table[list(WHITE_SPACE)] = TAB
    table[ord(" ")] = SPACE
    table[list(NEWLINES)] = NEWLINE
    return CharTable("pretok", table, PRETOK_CLASS_NAMES)


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and lengths of the runs of True in a (M,) bool mask."""
    edges = np.diff(np.concatenate([[False], mask, [False]]).astype(np.int8))
    starts = np.flatnonzero(edges == 1)
    return starts, np.flatnonzero(edges == -1) - starts


def pretok_marks(cls: np.ndarray) -> np.ndarray:
    """(M,) bool: the first character of every (stable) pre-tokenizer piece, vectorized."""
    n = len(cls)
    marks = np.zeros(n, dtype=bool)
    if n == 0:
        return marks
    letter = cls <= L_OTHER
    symbol = (cls == SYMBOL) | (cls == APOSTROPHE)
    newline = cls == NEWLINE
    # Rule 4: line breaks directly after a symbol run belong to it.
    nl_starts, nl_lengths = _runs(newline)
    swallowed_runs = (nl_starts > 0) & symbol[np.maximum(nl_starts - 1, 0)]
    swallowed = np.zeros(n, dtype=bool)
    for_runs = np.repeat(swallowed_runs, nl_lengths)
    swallowed[np.flatnonzero(newline)] = for_runs
    # Rule 5: whitespace runs (what rule 4 swallowed excluded).
    free_ws = ((cls == SPACE) | (cls == TAB) | newline) & ~swallowed
    ws_starts, ws_lengths = _runs(free_ws)
    marks[ws_starts] = True
    lone = ws_starts[(ws_lengths == 1) & (cls[ws_starts] != NEWLINE)]  # a lone space or tab
    prefix = np.zeros(n + 1, dtype=bool)  # position p: character p - 1 may join what starts at p
    prefix[lone + 1] = True
    lone_space = np.zeros(n + 1, dtype=bool)
    lone_space[lone[cls[lone] == SPACE] + 1] = True
    # Rule 4: symbol runs, joined to a lone space before them.
    sym_starts, sym_lengths = _runs(symbol)
    joined = lone_space[sym_starts]
    marks[sym_starts[~joined]] = True
    lone_symbol = sym_starts[~joined & (sym_lengths == 1)]  # a one-character piece so far
    prefix[lone_symbol + 1] = True
    apostrophe = np.zeros(n + 1, dtype=bool)
    apostrophe[lone_symbol[cls[lone_symbol] == APOSTROPHE] + 1] = True
    # Rules 1 and 2: letter runs, and contractions after a lone apostrophe.
    let_starts, let_lengths = _runs(letter)
    marks[let_starts[~prefix[let_starts]]] = True
    after = apostrophe[let_starts]
    s, length = let_starts[after], let_lengths[after]
    first = cls[s]
    one = (first == L_SDMT) & (length >= 2)  # 's then more letters: the next one starts a piece
    marks[s[one] + 1] = True
    two = np.isin(first, list(SECOND)) & (length >= 3)
    s2 = s[two]
    want = np.select([cls[s2] == L_L, cls[s2] == L_V], [L_L, L_E], L_E)
    marks[s2[cls[s2 + 1] == want] + 2] = True
    # Rule 3: digit pieces of at most 3.
    digits = np.flatnonzero(cls == DIGIT)
    marks[digits[run_offsets(digits) % 3 == 0]] = True
    return marks


# Machine modes: what the characters since the last piece start say about the next character.
(START, LETTER, DONE, APOS, APOS_2, SYM_1, SYM_N, SWALLOW, WS_SPACE, WS_TAB, WS_N, DIGITS) = range(12)


def pretok_step(state: tuple[int, int], cls: int) -> tuple[tuple[int, int], bool]:
    """One character of the pre-tokenizer rules as a machine. State: (mode, extra): ``extra`` is
    the digit-run offset mod 3 in digits, the letter a two-letter contraction waits for after
    ``'l``, ``'v``, ``'r``, and 0 otherwise."""
    mode, extra = state
    if cls <= L_OTHER:  # a letter
        if mode == APOS:  # rule 2
            if cls == L_SDMT:
                return (DONE, 0), False
            if cls in SECOND:
                return (APOS_2, SECOND[cls]), False
            return (LETTER, 0), False
        if mode == APOS_2:
            return ((DONE, 0) if cls == extra else (LETTER, 0)), False
        if mode == LETTER:
            return (LETTER, 0), False
        return (LETTER, 0), mode not in (SYM_1, WS_SPACE, WS_TAB)  # joined to a lone prefix
    if cls == DIGIT:
        if mode == DIGITS:
            nxt = (extra + 1) % 3
            return (DIGITS, nxt), nxt == 0
        return (DIGITS, 0), True
    if cls in (SYMBOL, APOSTROPHE):
        if mode in (SYM_1, SYM_N, APOS, WS_SPACE):  # the run goes on, or joins a lone space
            return (SYM_N, 0), False
        return ((APOS, 0) if cls == APOSTROPHE else (SYM_1, 0)), True
    if cls == NEWLINE:
        if mode in (SYM_1, SYM_N, APOS, SWALLOW):
            return (SWALLOW, 0), False
        if mode in (WS_SPACE, WS_TAB, WS_N):
            return (WS_N, 0), False
        return (WS_N, 0), True
    # A space or another whitespace character.
    if mode in (WS_SPACE, WS_TAB, WS_N):
        return (WS_N, 0), False
    return ((WS_SPACE, 0) if cls == SPACE else (WS_TAB, 0)), True


@attrs.frozen(kw_only=True)
class Pretok(Splitter):
    """The first character of every piece of the GPT-4 / Llama 3 pre-tokenizer (the reference's
    ``pretok``), read prefix-stably (module docstring)."""

    kind: ClassVar[str] = "pretok"
    granularity: ClassVar[int | None] = 1

    def char_table(self) -> CharTable:
        return pretok_classes()

    def marks(self, chars: Chars) -> np.ndarray:
        return pretok_marks(chars.classes(pretok_classes()))

    def start(self) -> tuple[int, int]:
        return (START, 0)

    def step(self, state: tuple[int, int], cls: int, nbytes: int) -> tuple[tuple[int, int], bool]:
        return pretok_step(state, cls)


# -- punct -----------------------------------------------------------------------------------------

OTHER, PUNCT, WIDE_PUNCT, WS, LINE = range(5)
PUNCT_CLASS_NAMES = ("other", "punctuation", "full-width punctuation", "whitespace", "newline")
#: Blocks whose punctuation ends a phrase by itself: CJK Symbols and Punctuation, the vertical and
#: small forms, the halfwidth and fullwidth forms.
WIDE_BLOCKS = ((0x3000, 0x3040), (0xFE10, 0xFE20), (0xFE30, 0xFE70), (0xFF00, 0xFF66))


@functools.cache
def punct_classes() -> CharTable:
    """The class of every code point under the phrase rules."""
    punct = np.array([name[0] == "P" for name in CATEGORIES] + [False])[general_category()]
    table = np.where(punct, PUNCT, OTHER).astype(np.uint8)
    for lo, hi in WIDE_BLOCKS:
        block = table[lo:hi]
        block[block == PUNCT] = WIDE_PUNCT
    table[list(WHITE_SPACE)] = WS
    table[list(NEWLINES)] = LINE
    return CharTable("punct", table, PUNCT_CLASS_NAMES)


@attrs.frozen(kw_only=True)
class Punct(Splitter):
    """Phrase ends at punctuation (the reference's ``punct``; module docstring)."""

    kind: ClassVar[str] = "punct"

    def char_table(self) -> CharTable:
        return punct_classes()

    def marks(self, chars: Chars) -> np.ndarray:
        cls = chars.classes(punct_classes())  # (M,)
        ws = (cls == WS) | (cls == LINE)
        marks = cls == WIDE_PUNCT
        marks[1:] |= ws[1:] & (cls[:-1] == PUNCT)
        # The first line break of each whitespace run.
        lines = np.flatnonzero(cls == LINE)
        if len(lines):
            not_ws = np.flatnonzero(~ws)
            run = np.searchsorted(not_ws, lines)  # whitespace runs are separated by other characters
            first = np.ones(len(lines), dtype=bool)
            first[1:] = run[1:] != run[:-1]
            marks[lines[first]] = True
        return marks

    # Machine state: (previous class, a line break of this whitespace run is already marked).
    def start(self) -> tuple[int, bool]:
        return (OTHER, False)

    def step(self, state: tuple[int, bool], cls: int, nbytes: int) -> tuple[tuple[int, bool], bool]:
        prev, lined = state
        if cls in (WS, LINE):
            in_run = prev in (WS, LINE)
            lined = lined and in_run
            mark = prev == PUNCT or (cls == LINE and not lined)
            return (cls, lined or cls == LINE), mark
        return (cls, False), cls == WIDE_PUNCT
